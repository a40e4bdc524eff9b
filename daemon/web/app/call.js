// Calls with the browser as the media endpoint. The page owns an RTCPeerConnection; the daemon
// carries its SDP and candidates over the friend's encrypted libp2p connection and stays the
// only authority on the call's state (calls.* and call.* events, docs/API.md).
//
// Outgoing: getUserMedia -> offer -> ICE gathering complete -> calls.start {media: "browser",
// sdp}; the answer and the friend's trickled candidates arrive as call.media events.
// Incoming: calls.remote_offer -> getUserMedia -> answer -> gathering complete -> calls.answer
// {media: "browser", sdp}. Meanwhile connectionState and getStats() go to calls.report.

import { rpc } from "./app.js";
import { state, changed, toast } from "./store.js";

const GATHER_TIMEOUT_MS = 5000;
const STATS_EVERY_MS = 1000;

let pc = null;
let statsTimer = null;
let pendingCandidates = []; // remote candidates before the remote description is set
let earlyMedia = []; // call.media events before we know our call's id
const prevStats = new WeakMap(); // RTCPeerConnection -> the previous sample (for rates)
const endedIds = new Set(); // calls that ended (a late calls.start reply must not revive one)

function media() {
  return state.media;
}

async function iceServers() {
  try {
    const { ice_servers: servers } = await rpc.call("calls.ice_servers");
    return Array.isArray(servers) ? servers : [];
  } catch (err) {
    return []; // no STUN default: direct paths only
  }
}

async function capture(video) {
  const audio = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  const cam = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } };
  const tries = video ? [{ audio, video: cam }, { audio: false, video: cam }, { audio, video: false }] : [{ audio, video: false }];
  let lastErr = null;
  for (const constraints of tries) {
    try {
      return await navigator.mediaDevices.getUserMedia(constraints);
    } catch (err) {
      lastErr = err;
    }
  }
  const why = lastErr ? `${lastErr.name}: ${lastErr.message}` : "no media devices";
  toast(`No ${video ? "camera or microphone" : "microphone"} (${why}); the call goes on without sending`, "error", 8000);
  return new MediaStream();
}

function gathered(conn) {
  return new Promise((resolve) => {
    if (conn.iceGatheringState === "complete") {
      resolve();
      return;
    }
    const timer = setTimeout(resolve, GATHER_TIMEOUT_MS);
    conn.addEventListener("icegatheringstatechange", () => {
      if (conn.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

function newMedia(video, direction) {
  state.media = {
    callId: null,
    direction,
    video,
    local: null,
    remote: new MediaStream(),
    remoteTracks: 0,
    muted: false,
    camOff: false,
    connection: "new",
    stats: null,
  };
  changed();
  return state.media;
}

function makePc(servers, m) {
  // bundlePolicy stays "balanced" (the default): a "max-bundle" offer marks the video section
  // bundle-only with no candidates of its own, and aiortc (the CLI's side) then answers with
  // no candidates at all, so the call never connects.
  const conn = new RTCPeerConnection({ iceServers: servers });
  conn.ontrack = (e) => {
    if (media() !== m) return;
    if (!m.remote.getTracks().includes(e.track)) m.remote.addTrack(e.track);
    m.remoteTracks = m.remote.getTracks().length;
    changed();
  };
  conn.onconnectionstatechange = () => {
    if (media() !== m) return;
    m.connection = conn.connectionState;
    changed();
    if (m.callId) report({ state: conn.connectionState });
  };
  return conn;
}

async function report(fields) {
  const m = media();
  if (!m || !m.callId) return;
  try {
    await rpc.call("calls.report", { id: m.callId, ...fields });
  } catch (err) {
    // not_found once the call has ended; not_connected while the socket is down
  }
}

function startStats() {
  clearInterval(statsTimer);
  statsTimer = setInterval(async () => {
    const m = media();
    if (!m || !pc) return;
    const stats = await collectStats(pc);
    if (media() !== m) return;
    m.stats = stats;
    changed();
    if (m.callId) report({ stats });
  }, STATS_EVERY_MS);
}

function candidateText(c) {
  if (!c) return "";
  const addr = c.address || c.ip || "?";
  return `${addr.includes(":") ? `[${addr}]` : addr}:${c.port} ${c.candidateType}`;
}

/** The page's view of the call, in the shape calls.list gives for aiortc calls. */
export async function collectStats(conn) {
  const report = await conn.getStats();
  const now = performance.now();
  const out = {
    state: conn.connectionState,
    codecs: [],
    fps: 0,
    video_frames_in: 0,
    frames_decoded: 0,
    bytes_in: 0,
    bytes_out: 0,
    kbps_in: null, // null until a second sample gives a rate
    kbps_out: null,
    audio_in: { packets: 0, lost: 0, jitter: 0 },
    video_in: { packets: 0, lost: 0, jitter: 0 },
    audio_out: { packets: 0, bytes: 0 },
    video_out: { packets: 0, bytes: 0 },
    rtt_ms: null,
    dtls: "",
    srtp: false,
    path: null,
    resolution: "",
  };
  const codecs = new Set();
  let pairId = null;
  let nominated = null;
  report.forEach((s) => {
    if (s.type === "inbound-rtp") {
      const side = s.kind === "video" ? out.video_in : out.audio_in;
      side.packets += s.packetsReceived || 0;
      side.lost += s.packetsLost || 0;
      side.jitter = s.jitter || 0;
      out.bytes_in += s.bytesReceived || 0;
      if (s.kind === "video") {
        out.frames_decoded += s.framesDecoded || 0;
        out.video_frames_in += s.framesReceived || s.framesDecoded || 0;
        if (s.framesPerSecond) out.fps = s.framesPerSecond;
        if (s.frameWidth) out.resolution = `${s.frameWidth}×${s.frameHeight}`;
      }
      const codec = s.codecId && report.get(s.codecId);
      if (codec && codec.mimeType) codecs.add(codec.mimeType);
    } else if (s.type === "outbound-rtp") {
      const side = s.kind === "video" ? out.video_out : out.audio_out;
      side.packets += s.packetsSent || 0;
      side.bytes += s.bytesSent || 0;
      out.bytes_out += s.bytesSent || 0;
      const codec = s.codecId && report.get(s.codecId);
      if (codec && codec.mimeType) codecs.add(codec.mimeType);
    } else if (s.type === "transport") {
      if (s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
      if (s.dtlsState) out.dtls = s.dtlsState;
      out.srtp = s.dtlsState === "connected" && !!s.srtpCipher;
    } else if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
      nominated = s;
    }
  });
  const pair = (pairId && report.get(pairId)) || nominated;
  if (pair) {
    const local = report.get(pair.localCandidateId);
    const remote = report.get(pair.remoteCandidateId);
    out.path = {
      local: candidateText(local),
      remote: candidateText(remote),
      relayed: !!(
        (local && local.candidateType === "relay") ||
        (remote && remote.candidateType === "relay")
      ),
    };
    if (pair.currentRoundTripTime != null) out.rtt_ms = Math.round(pair.currentRoundTripTime * 1000);
  }
  out.codecs = [...codecs].sort();
  const prev = prevStats.get(conn);
  if (prev) {
    const dt = (now - prev.at) / 1000;
    if (dt > 0) {
      out.kbps_in = Math.max(0, Math.round(((out.bytes_in - prev.bytes_in) * 8) / dt / 1000));
      out.kbps_out = Math.max(0, Math.round(((out.bytes_out - prev.bytes_out) * 8) / dt / 1000));
      if (!out.fps) out.fps = Math.max(0, Math.round((out.frames_decoded - prev.frames_decoded) / dt));
    }
  }
  prevStats.set(conn, { at: now, bytes_in: out.bytes_in, bytes_out: out.bytes_out, frames_decoded: out.frames_decoded });
  out.fps = Math.round(out.fps * 10) / 10;
  return out;
}

function addLocalTracks(conn, m, stream, offering) {
  m.local = stream;
  const audio = stream.getAudioTracks()[0];
  const video = stream.getVideoTracks()[0];
  if (offering) {
    // One transceiver per kind, in a fixed order, even without a device (receive only).
    conn.addTransceiver(audio || "audio", {
      direction: audio ? "sendrecv" : "recvonly",
      streams: [stream],
    });
    if (m.video) {
      conn.addTransceiver(video || "video", {
        direction: video ? "sendrecv" : "recvonly",
        streams: [stream],
      });
    }
  } else {
    // addTrack reuses the transceivers the friend's offer created.
    if (audio) conn.addTrack(audio, stream);
    if (video && m.video) conn.addTrack(video, stream);
  }
}

/** Call a friend with this page's camera and microphone. */
export async function startCall(peer, video) {
  if (state.media || state.call) {
    toast("Already in a call", "error");
    return;
  }
  const m = newMedia(video, "out");
  earlyMedia = [];
  try {
    const [servers, stream] = await Promise.all([iceServers(), capture(video)]);
    if (media() !== m) {
      stream.getTracks().forEach((t) => t.stop());
      return;
    }
    pc = makePc(servers, m);
    addLocalTracks(pc, m, stream, true);
    changed();
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    if (media() !== m) return;
    const { call } = await rpc.call("calls.start", {
      friend: peer,
      audio_only: !video,
      media: "browser",
      sdp: pc.localDescription.sdp,
    });
    if (media() !== m) {
      // Hung up while calls.start was on its way: end the call it started.
      rpc.call("calls.hangup", { friend: call.peer_id }).catch(() => {});
      return;
    }
    m.callId = call.id;
    if (endedIds.has(call.id)) {
      teardown();
      return;
    }
    if (!state.call || state.call.id !== call.id) state.call = call;
    startStats();
    changed();
    const early = earlyMedia;
    earlyMedia = [];
    for (const ev of early) await onMedia(ev);
  } catch (err) {
    if (media() === m) teardown();
    toast(`Call failed: ${err.message}`, "error", 8000);
  }
}

/** Answer the ringing call with this page's camera and microphone. */
export async function answer() {
  const ringing = state.call;
  if (!ringing || ringing.state !== "ringing_in" || state.media) return;
  const m = newMedia(ringing.video, "in");
  try {
    const offer = await rpc.call("calls.remote_offer");
    m.callId = offer.call_id;
    m.video = !!offer.video;
    const [servers, stream] = await Promise.all([iceServers(), capture(m.video)]);
    if (media() !== m) {
      stream.getTracks().forEach((t) => t.stop());
      return;
    }
    pc = makePc(servers, m);
    await pc.setRemoteDescription({ type: "offer", sdp: offer.sdp });
    addLocalTracks(pc, m, stream, false);
    changed();
    await flushCandidates();
    await pc.setLocalDescription(await pc.createAnswer());
    await gathered(pc);
    if (media() !== m) return;
    const { call } = await rpc.call("calls.answer", { media: "browser", sdp: pc.localDescription.sdp });
    if (media() !== m) {
      rpc.call("calls.hangup", { friend: call.peer_id }).catch(() => {});
      return;
    }
    if (!endedIds.has(call.id)) state.call = call;
    startStats();
    changed();
  } catch (err) {
    if (media() === m) teardown();
    toast(`Could not answer: ${err.message}`, "error", 8000);
  }
}

/** Hang up (or decline a ringing call), from this page. */
export async function hangup() {
  const call = state.call;
  try {
    await rpc.call("calls.hangup", call ? { friend: call.peer_id } : {});
  } catch (err) {
    if (err.name_ !== "not_found") toast(err.message, "error");
  }
  if (media() && (!call || media().callId === call.id || !media().callId)) teardown();
}

export function toggleMute() {
  const m = media();
  if (!m || !m.local) return;
  m.muted = !m.muted;
  m.local.getAudioTracks().forEach((t) => {
    t.enabled = !m.muted;
  });
  changed();
}

export function toggleCamera() {
  const m = media();
  if (!m || !m.local) return;
  m.camOff = !m.camOff;
  m.local.getVideoTracks().forEach((t) => {
    t.enabled = !m.camOff;
  });
  changed();
}

async function flushCandidates() {
  const list = pendingCandidates;
  pendingCandidates = [];
  for (const c of list) {
    try {
      await pc.addIceCandidate(c);
    } catch (err) {
      console.warn("remote candidate refused", c, err);
    }
  }
}

/** A call.media event: the friend's answer, or one of their trickled candidates. */
export async function onMedia(ev) {
  const m = media();
  if (!m) return;
  if (!m.callId) {
    earlyMedia.push(ev);
    return;
  }
  if (ev.call_id !== m.callId || !pc) return;
  try {
    if (ev.kind === "answer") {
      await pc.setRemoteDescription({ type: "answer", sdp: ev.sdp });
      await flushCandidates();
    } else if (ev.kind === "candidate") {
      let text = ev.candidate || "";
      if (text && !text.startsWith("candidate:")) text = `candidate:${text}`;
      const init = { candidate: text, sdpMid: ev.mid ?? null, sdpMLineIndex: ev.index ?? null };
      if (pc.remoteDescription) await pc.addIceCandidate(init);
      else pendingCandidates.push(init);
    }
  } catch (err) {
    console.warn("call.media not applied", ev, err);
  }
}

/** A call's state from the daemon: end our media when our call ends. */
export function onCall(call) {
  if (call && call.state === "ended") endedIds.add(call.id);
  const m = media();
  if (!m) return;
  if (!call) {
    // No live call (e.g. after a reconnect: the daemon ended ours when our socket closed).
    if (m.callId) teardown();
    return;
  }
  if (call.state === "ended" && (m.callId === call.id || (!m.callId && m.direction === "in"))) {
    teardown();
  }
}

export function teardown() {
  clearInterval(statsTimer);
  statsTimer = null;
  const m = media();
  if (m && m.local) m.local.getTracks().forEach((t) => t.stop());
  if (pc) {
    pc.ontrack = null;
    pc.onconnectionstatechange = null;
    pc.close();
  }
  pc = null;
  pendingCandidates = [];
  earlyMedia = [];
  state.media = null;
  changed();
}
