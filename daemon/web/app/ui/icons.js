// Line icons drawn for p2pchat (24×24, stroke = currentColor). Decorative: aria-hidden.
import { html } from "../html.js";

const paths = {
  plus: html`<path d="M12 5v14M5 12h14" />`,
  x: html`<path d="M6 6l12 12M18 6L6 18" />`,
  check: html`<path d="M5 12.5l4.5 4.5L19 7.5" />`,
  checks: html`<path d="M2 12.5l4.5 4.5L16 7.5M11.5 16l1 1L22 7.5" />`,
  clock: html`<circle cx="12" cy="12" r="8.5" /><path d="M12 7.5V12l3 2" />`,
  back: html`<path d="M15 18l-6-6 6-6" />`,
  copy: html`<rect x="9" y="9" width="11" height="11" rx="2" /><path d="M5 15H4.5A1.5 1.5 0 0 1 3 13.5v-9A1.5 1.5 0 0 1 4.5 3h9A1.5 1.5 0 0 1 15 4.5V5" />`,
  send: html`<path d="M4 12L20 4l-5 16-3.5-6.5z M11.5 13.5L20 4" />`,
  clip: html`<path d="M20 11.5l-8 8a5 5 0 0 1-7-7l8.5-8.5a3.3 3.3 0 0 1 4.7 4.7l-8.4 8.4a1.7 1.7 0 0 1-2.4-2.4L15 7" />`,
  phone: html`<path d="M5.5 3.5h3l1.8 4.6-2.1 1.4a11 11 0 0 0 6.3 6.3l1.4-2.1 4.6 1.8v3a2 2 0 0 1-2 2A16.5 16.5 0 0 1 3.5 5.5a2 2 0 0 1 2-2z" />`,
  hangup: html`<g transform="rotate(135 12 12)"><path d="M5.5 3.5h3l1.8 4.6-2.1 1.4a11 11 0 0 0 6.3 6.3l1.4-2.1 4.6 1.8v3a2 2 0 0 1-2 2A16.5 16.5 0 0 1 3.5 5.5a2 2 0 0 1 2-2z" /></g>`,
  video: html`<rect x="2.5" y="6" width="13" height="12" rx="2" /><path d="M15.5 10.5l6-3.5v10l-6-3.5z" />`,
  videoOff: html`<rect x="2.5" y="6" width="13" height="12" rx="2" /><path d="M15.5 10.5l6-3.5v10l-6-3.5zM3 3l18 18" />`,
  mic: html`<rect x="9" y="2.5" width="6" height="12" rx="3" /><path d="M5.5 11a6.5 6.5 0 0 0 13 0M12 17.5v4M8.5 21.5h7" />`,
  micOff: html`<rect x="9" y="2.5" width="6" height="12" rx="3" /><path d="M5.5 11a6.5 6.5 0 0 0 13 0M12 17.5v4M8.5 21.5h7M3 3l18 18" />`,
  download: html`<path d="M12 3.5v12M7 10.5l5 5 5-5M4 20.5h16" />`,
  file: html`<path d="M14 3H6.5A1.5 1.5 0 0 0 5 4.5v15A1.5 1.5 0 0 0 6.5 21h11a1.5 1.5 0 0 0 1.5-1.5V8zM14 3v5h5" />`,
  activity: html`<path d="M2.5 12h4l3-8 5 16 3-8h4" />`,
  userPlus: html`<circle cx="9" cy="8" r="4" /><path d="M2 20.5a7 7 0 0 1 14 0M19 8v6M16 11h6" />`,
};

export function Icon({ name, cls = "" }) {
  return html`<svg class=${`icon ${cls}`} viewBox="0 0 24 24" aria-hidden="true" focusable="false"
    fill="none" stroke="currentColor" stroke-width="1.8" stroke-linecap="round" stroke-linejoin="round"
  >${paths[name] || null}</svg>`;
}
