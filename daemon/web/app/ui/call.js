// The ringing dialog and the call panel (remote video, self-view, mute, camera, hang up, stats).
import { useRef, useEffect, useState } from "../vendor/hooks.module.js";
import { html } from "../html.js";
import { state } from "../store.js";
import { rpc } from "../app.js";
import { answer, hangup, toggleMute, toggleCamera } from "../call.js";
import * as fmt from "../format.js";
import { Icon } from "./icons.js";
import { Avatar } from "./sidebar.js";

function who(peer) {
  return (
    state.contacts[peer] || { peer_id: peer, display_name: fmt.shortId(peer), state: "friend", online: true }
  );
}

export function Ring() {
  const call = state.call;
  if (!call || call.state !== "ringing_in" || state.media) return null;
  const c = who(call.peer_id);
  return html`<div class="modal-back">
    <div class="modal ring" role="alertdialog" aria-labelledby="ring-title" data-testid="ring">
      <${Avatar} contact=${c} size="big" />
      <h2 id="ring-title" class="ring-title">${c.display_name}</h2>
      <p class="ring-sub">is calling you · ${call.video ? "video call" : "audio call"}</p>
      <div class="ring-actions">
        <span class="ring-choice">
          <button class="round-btn decline" data-testid="ring-decline" aria-label="Decline" onClick=${hangup}>
            <${Icon} name="hangup" />
          </button>
          <span aria-hidden="true">Decline</span>
        </span>
        <span class="ring-choice">
          <button class="round-btn accept" data-testid="ring-accept" aria-label="Accept" onClick=${answer}>
            <${Icon} name=${call.video ? "video" : "phone"} />
          </button>
          <span aria-hidden="true">Accept</span>
        </span>
      </div>
    </div>
  </div>`;
}

function Video({ stream, cls, muted, testid }) {
  const ref = useRef(null);
  useEffect(() => {
    const v = ref.current;
    if (!v) return;
    if (v.srcObject !== stream) v.srcObject = stream || null;
    if (stream && v.paused) v.play().catch(() => {});
  });
  return html`<video ref=${ref} class=${cls} autoplay playsinline muted=${muted} data-testid=${testid}></video>`;
}

function useTick(ms) {
  const [, set] = useState(0);
  useEffect(() => {
    const t = setInterval(() => set((n) => n + 1), ms);
    return () => clearInterval(t);
  }, [ms]);
}

const PHASE = {
  offering: "Calling…",
  ringing_out: "Ringing…",
  ringing_in: "Answering…",
  connecting: "Connecting…",
};

function statsLine(s) {
  if (!s) return "";
  const parts = [];
  if (s.codecs && s.codecs.length) parts.push(s.codecs.map((c) => c.split("/")[1] || c).join(" + "));
  if (s.fps) parts.push(`${s.fps} fps`);
  if (s.resolution) parts.push(s.resolution);
  if (s.kbps_in != null) parts.push(`${s.kbps_in} kbps in`);
  if (s.kbps_out) parts.push(`${s.kbps_out} kbps out`);
  const rtt = s.rtt_ms ?? s.video_rtt_ms ?? s.audio_rtt_ms;
  if (rtt != null) parts.push(`rtt ${Math.round(rtt)} ms`);
  if (s.path && s.path.remote) parts.push(`${s.path.relayed ? "relayed" : "direct"} to ${s.path.remote}`);
  return parts.join(" · ");
}

export function CallPanel() {
  const call = state.call;
  const m = state.media;
  useTick(1000);
  const [daemonStats, setDaemonStats] = useState(null);
  const owned = !!m;
  // A call this page does not carry (aiortc, another tab): show the daemon's stats.
  useEffect(() => {
    if (owned || !call) return undefined;
    const poll = async () => {
      try {
        const { calls } = await rpc.call("calls.list");
        const live = calls.find((c) => c.id === call.id);
        setDaemonStats(live && live.stats ? live.stats : null);
      } catch (err) {
        // shown again at the next poll
      }
    };
    poll();
    const t = setInterval(poll, 2000);
    return () => clearInterval(t);
  }, [owned, call && call.id]);
  if (!m && (!call || call.state === "ringing_in")) return null;
  const peer = (call && call.peer_id) || state.selected;
  const c = who(peer);
  const video = m ? m.video : !!(call && call.video);
  const phase = call ? call.state : "offering";
  const since = call && call.connected_at;
  const label = phase === "active" && since ? fmt.clock(Date.now() - since) : PHASE[phase] || (m ? "Starting…" : phase);
  const stats = m ? m.stats : daemonStats;
  const hasRemoteVideo = m && m.remote.getVideoTracks().length > 0;
  return html`<section class=${`call-panel ${video ? "video" : "audio"}`} data-testid="call" data-state=${phase}
    aria-label=${`Call with ${c.display_name}`}>
    <div class="call-stage">
      ${m && video && html`<${Video} stream=${m.remote} cls=${`remote ${hasRemoteVideo ? "" : "waiting"}`} muted=${false} testid="remote-video" />`}
      ${m && !video && html`<${Video} stream=${m.remote} cls="remote hidden" muted=${false} testid="remote-audio" />`}
      ${(!video || !hasRemoteVideo) &&
      html`<div class="call-placeholder"><${Avatar} contact=${c} size="huge" /></div>`}
      ${m && video && m.local &&
      html`<div class=${`self-view ${m.camOff ? "off" : ""}`}>
        <${Video} stream=${m.local} cls="self" muted=${true} testid="self-video" />
        ${m.camOff && html`<span class="self-label"><${Icon} name="videoOff" /> Camera off</span>`}
        ${m.muted && html`<span class="self-muted" title="You are muted"><${Icon} name="micOff" /></span>`}
      </div>`}
      <div class="call-top">
        <span class="call-name">${c.display_name}</span>
        <span class="call-phase" data-testid="call-phase">${label}</span>
      </div>
      ${!m && call && html`<p class="call-note">This call's media runs in your daemon${call.media === "browser" ? " (another page)" : ""}, not in this page.</p>`}
    </div>
    <div class="call-bar">
      <p class="call-stats" data-testid="call-stats" data-frames-decoded=${stats ? stats.frames_decoded ?? stats.video_frames_in ?? 0 : 0}
        data-connection=${m ? m.connection : ""}>${statsLine(stats)}</p>
      <div class="call-controls">
        ${m &&
        html`<button class=${`round-btn ${m.muted ? "toggled" : ""}`} data-testid="call-mute" aria-pressed=${m.muted}
          aria-label=${m.muted ? "Unmute" : "Mute"} title=${m.muted ? "Unmute" : "Mute"} onClick=${toggleMute}>
          <${Icon} name=${m.muted ? "micOff" : "mic"} /></button>`}
        ${m && video &&
        html`<button class=${`round-btn ${m.camOff ? "toggled" : ""}`} data-testid="call-camera" aria-pressed=${m.camOff}
          aria-label=${m.camOff ? "Camera on" : "Camera off"} title=${m.camOff ? "Camera on" : "Camera off"} onClick=${toggleCamera}>
          <${Icon} name=${m.camOff ? "videoOff" : "video"} /></button>`}
        <button class="round-btn decline" data-testid="call-hangup" aria-label="Hang up" title="Hang up" onClick=${hangup}>
          <${Icon} name="hangup" /></button>
      </div>
    </div>
  </section>`;
}
