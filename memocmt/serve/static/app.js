// The page: microphone -> AudioWorklet (16 kHz PCM16) -> websocket (memocmt.v1) -> timeline and chart.
"use strict";

const $ = (id) => document.getElementById(id);
const chart = new EmotionChart($("chart"), $("legend"));
let socket = null, audio = null, stream = null, worklet = null, finishing = false;

function status(text) { $("status").textContent = text; }

function notice(text) {
  const box = $("notice");
  box.textContent = text || "";
  box.hidden = !text;
}

function socketUrl() {
  const url = new URL("ws", window.location.href);
  url.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
  const token = new URLSearchParams(window.location.search).get("token");
  if (token) url.searchParams.set("token", token);
  return url.toString();
}

function microphoneError(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone access was denied: allow the microphone for this page in the browser's site settings, then press Start again.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone was found: connect one, then press Start again.";
    case "NotReadableError":
      return "The microphone is in use by another program or could not be opened.";
    default:
      return `The microphone could not be opened: ${err && err.message ? err.message : err}.`;
  }
}

async function start() {
  notice("");
  if (!navigator.mediaDevices || !window.AudioWorkletNode) {
    notice("This browser cannot capture audio here: open the page over https or from localhost in a current browser.");
    return;
  }
  $("start").disabled = true;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 },
    });
  } catch (err) {
    notice(microphoneError(err));
    $("start").disabled = false;
    return;
  }
  audio = new AudioContext();
  await audio.audioWorklet.addModule("static/pcm-worklet.js");
  worklet = new AudioWorkletNode(audio, "pcm16-sender");
  const mute = audio.createGain();
  mute.gain.value = 0;
  audio.createMediaStreamSource(stream).connect(worklet).connect(mute).connect(audio.destination);
  finishing = false;
  status("Connecting ...");
  socket = new WebSocket(socketUrl(), "memocmt.v1");
  socket.binaryType = "arraybuffer";
  socket.onopen = () => socket.send(JSON.stringify({ type: "start", sample_rate: 16000, format: "pcm_s16le", channels: 1 }));
  socket.onmessage = (event) => handle(JSON.parse(event.data));
  socket.onclose = (event) => closed(event);
  worklet.port.onmessage = (event) => {
    if (socket && socket.readyState === WebSocket.OPEN && !finishing) socket.send(event.data);
  };
}

function handle(message) {
  switch (message.type) {
    case "ready":
      chart.setLabels(message.labels);
      status(`Listening (session ${message.session}, ${audio.sampleRate} Hz microphone resampled to 16 kHz).`);
      $("stop").disabled = false;
      break;
    case "utterance":
      addUtterance(message);
      break;
    case "revision":
      reviseUtterance(message);
      break;
    case "error":
      notice(`Server: ${message.message}`);
      break;
    case "busy":
      notice(`The server is busy: ${message.message || "every session slot is in use; try again later."}`);
      break;
    case "done":
      showSummary(message.summary);
      break;
  }
}

function addUtterance(u) {
  const row = document.createElement("tr");
  row.className = "utterance";
  row.dataset.index = u.index;
  const cells = [
    [`${u.start_s.toFixed(1)}-${u.end_s.toFixed(1)}`, "num"],
    [u.speaker === null || u.speaker === undefined ? "-" : `S${u.speaker + 1}`, ""],
    [u.text || "(no transcript)", "text"],
    [u.label ? `${u.label} (then ${u.runner_up.label} ${u.runner_up.confidence.toFixed(2)})` : "-", "label"],
    ["", "num"],
    [u.timings_ms.eos_to_result !== undefined ? `${Math.round(u.timings_ms.eos_to_result)} ms` : "-", "num"],
  ];
  for (const [text, cls] of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    row.appendChild(td);
  }
  if (u.confidence !== null && u.confidence !== undefined) {
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("i");
    fill.style.width = `${Math.round(u.confidence * 100)}%`;
    bar.appendChild(fill);
    row.children[4].append(bar, u.confidence.toFixed(2));
  }
  $("timeline").tBodies[0].prepend(row);
  if (u.probabilities) chart.add(u.end_s, u.probabilities);
}

// An earlier utterance classified again once its voice was well known: the row shows the new label,
// marked, with what was shown at the time in its tooltip.
function reviseUtterance(r) {
  const row = $("timeline").querySelector(`tr[data-index="${r.index}"]`);
  if (!row || r.label === r.previous_label) return;
  row.classList.add("revised");
  row.children[3].textContent = `${r.label} (revised; was ${r.previous_label} ${r.previous_confidence.toFixed(2)})`;
  row.children[3].title = "classified again in hindsight, with more of this voice heard";
  const bar = row.children[4].querySelector(".bar i");
  if (bar) bar.style.width = `${Math.round(r.confidence * 100)}%`;
  if (row.children[4].lastChild) row.children[4].lastChild.textContent = r.confidence.toFixed(2);
}

function showSummary(s) {
  const lines = [`utterances: ${s.utterances} in ${s.audio_s.toFixed(1)} s of audio`];
  const emotions = Object.entries(s.emotions || {}).map(([k, v]) => `${k} ${v}`).join(", ");
  if (emotions) lines.push(`emotions: ${emotions}`);
  const total = (s.latency_ms || {}).eos_to_result;
  if (total) lines.push(`end of speech to result: p50 ${total.p50.toFixed(0)} ms, p95 ${total.p95.toFixed(0)} ms`);
  lines.push(`dropped utterances: ${s.dropped_utterances}`);
  $("summary-text").textContent = lines.join("\n");
  $("summary").hidden = false;
}

function closed(event) {
  if (event.code === 1013) notice("The server is busy: every session slot is in use. Try again in a minute.");
  else if (event.code === 1008) notice("The server refused the connection: open the page with ?token=YOUR_TOKEN.");
  else if (!finishing && event.code !== 1000) notice(`The connection to the server closed (code ${event.code}).`);
  status(finishing ? "Stopped." : "Disconnected.");
  release();
}

function release() {
  if (worklet) worklet.port.postMessage("stop");
  if (stream) stream.getTracks().forEach((t) => t.stop());
  if (audio) audio.close();
  stream = audio = worklet = null;
  socket = null;
  $("start").disabled = false;
  $("stop").disabled = true;
}

function stop() {
  $("stop").disabled = true;
  if (worklet) worklet.port.postMessage("flush");
  status("Finishing the last utterance ...");
  setTimeout(() => {
    finishing = true;
    if (stream) stream.getTracks().forEach((t) => t.stop());
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "stop" }));
  }, 150);
}

$("start").addEventListener("click", () => { start().catch((err) => { notice(`Could not start: ${err.message || err}`); release(); }); });
$("stop").addEventListener("click", stop);
chart.draw();
