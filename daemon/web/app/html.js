// htm bound to Preact: html`<div class=${c}>${text}</div>`; text is always a text node.
import { h } from "./vendor/preact.module.js";
import htm from "./vendor/htm.module.js";

export const html = htm.bind(h);
