// The talk page: microphone + camera -> the server's units (protocol.py), the model's voice, face
// and text back. No build step; everything is plain browser APIs.
'use strict';

const C = {HELLO: 0x00, AUDIO_PCM16: 0x01, VIDEO_FRAME: 0x03, TEXT: 0x04};
const S = {HELLO: 0x00, INFO: 0x10, AUDIO: 0x11, VIDEO: 0x12, TEXT: 0x13, CLOSING: 0x7e, ERROR: 0x7f};
const TOK = {PAD: 256, WORD_END: 257, END_OF_TURN: 258};
const TURN = ['silent', 'speaking', 'yielded'];
const PREBUFFER_UNITS = 2; // jitter buffer before playback starts (and after an underrun)
// Clock alignment: a unit should reach the server LEAD_MS before the deadline that takes it. When
// the median wait of the last units strays from that by more than SLACK_MS, the capture's unit
// boundaries are moved once (dropping or inserting that many samples): units then wait ~LEAD_MS
// instead of up to a whole unit, and a queue that built up at start-up is drained.
const LEAD_MS = 30, SLACK_MS = 25, ALIGN_WINDOW = 8;
const $ = (id) => document.getElementById(id);

const st = {ws: null, hello: null, ctx: null, media: null, capture: null, playback: null, grab: null,
            frames: [], sendTimes: new Map(), recvSq: 0, recvN: 0, waits: [], alignAt: 0, realigned: 0, rtts: [], sent: 0, received: 0, cameraOn: true,
            decoder: new TextDecoder('utf-8')};

function pct(xs, p) {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))];
}

function send(type, payload) {
  if (!st.ws || st.ws.readyState !== WebSocket.OPEN) return;
  const body = payload instanceof ArrayBuffer ? new Uint8Array(payload)
             : new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
  const msg = new Uint8Array(1 + body.length);
  msg[0] = type;
  msg.set(body, 1);
  st.ws.send(msg.buffer);
}

function showError(text) {
  const p = $('errors');
  p.textContent = (text + '\n' + p.textContent).slice(0, 2000);
}

// One camera frame at the model's size as raw RGB, kept until the unit that closes it (at most 4).
function grabFrame() {
  if (!st.cameraOn || !st.hello) return;
  const v = $('camera');
  if (v.readyState < 2) return;
  const {width: w, height: h} = st.hello;
  const c = st.grabCanvas || (st.grabCanvas = Object.assign(document.createElement('canvas'), {width: w, height: h}));
  const g = c.getContext('2d', {willReadFrequently: true});
  g.drawImage(v, 0, 0, w, h);
  const rgba = g.getImageData(0, 0, w, h).data;
  const msg = new Uint8Array(1 + 4 + w * h * 3);
  msg[0] = 1; // raw
  new DataView(msg.buffer).setUint16(1, h, true);
  new DataView(msg.buffer).setUint16(3, w, true);
  for (let i = 0, j = 5; i < rgba.length; i += 4) { msg[j++] = rgba[i]; msg[j++] = rgba[i + 1]; msg[j++] = rgba[i + 2]; }
  st.frames.push(msg);
  if (st.frames.length > 4) st.frames.shift();
}

// A 160 ms unit from the capture worklet: its frames, then its audio (which closes the unit).
function onCaptureUnit(samples) {
  for (const f of st.frames) send(C.VIDEO_FRAME, f);
  st.frames = [];
  const pcm = new Int16Array(samples.length);
  let sq = 0;
  for (let i = 0; i < samples.length; i++) {
    const x = Math.max(-1, Math.min(1, samples[i]));
    pcm[i] = Math.round(x * 32767);
    sq += x * x;
  }
  st.sendTimes.set(st.sent, performance.now());
  send(C.AUDIO_PCM16, pcm);
  st.sent++;
  $('units-sent').textContent = st.sent;
  $('mic-rms').textContent = Math.sqrt(sq / samples.length).toFixed(4);
}

function drawAvatar(frames) {
  const cv = $('avatar');
  const g = cv.getContext('2d');
  const [n, h, w] = [frames.n, frames.h, frames.w];
  const small = st.avatarSmall || (st.avatarSmall = Object.assign(document.createElement('canvas'), {width: w, height: h}));
  const sg = small.getContext('2d');
  const img = sg.createImageData(w, h);
  for (let k = 0; k < n; k++) {
    setTimeout(() => {
      const px = frames.data.subarray(k * h * w * 3, (k + 1) * h * w * 3);
      for (let i = 0, j = 0; i < px.length; i += 3, j += 4) {
        img.data[j] = px[i]; img.data[j + 1] = px[i + 1]; img.data[j + 2] = px[i + 2]; img.data[j + 3] = 255;
      }
      sg.putImageData(img, 0, 0);
      g.imageSmoothingEnabled = false;
      g.drawImage(small, 0, 0, cv.width, cv.height);
    }, k * 40);
  }
}

function onText(tokens) {
  let out = '';
  const bytes = [];
  const flush = () => { if (bytes.length) { out += st.decoder.decode(new Uint8Array(bytes), {stream: true}); bytes.length = 0; } };
  for (const t of tokens) {
    if (t < 256) { bytes.push(t); continue; }
    flush();
    if (t === TOK.WORD_END) out += ' ';
    else if (t === TOK.END_OF_TURN) out += '\n';
  }
  flush();
  if (out) {
    const el = $('transcript');
    el.textContent = (el.textContent + out).slice(-4000);
    el.scrollTop = el.scrollHeight;
  }
}

// `waitMs`: how long unit `seq` waited in the server for the deadline that took it (queue included).
// Dropping D ms of captured samples makes every later unit complete D later (and, when units were
// queued, sends fewer of them), so their wait shrinks by D; inserting zeros does the opposite.
function align(waitMs, seq) {
  st.waits.push(waitMs);
  if (st.waits.length > ALIGN_WINDOW) st.waits.shift();
  if (st.waits.length < ALIGN_WINDOW || seq < st.alignAt || !st.capture) return;
  const med = pct(st.waits, 50);
  if (Math.abs(med - LEAD_MS) <= SLACK_MS) return;
  st.capture.port.postMessage({shift: Math.round((med - LEAD_MS) * st.hello.sample_rate / 1000)});
  st.alignAt = st.sent + 2; // units already sent were cut at the old phase
  st.waits = [];
  st.realigned++;
  $('realigned').textContent = st.realigned;
}

function onInfo(dv) {
  const inputSeq = dv.getInt32(4, true);
  const turn = dv.getUint8(8);
  const stepMs = dv.getFloat32(12, true);
  const tickAgeMs = dv.getFloat32(16, true);
  const late = dv.getUint32(24, true);
  if (st.sendTimes.has(inputSeq)) {
    const now = performance.now();
    st.rtts.push(now - st.sendTimes.get(inputSeq));
    align(now - tickAgeMs - st.sendTimes.get(inputSeq), inputSeq);
    st.sendTimes.delete(inputSeq);
    if (st.rtts.length > 500) st.rtts.shift();
    $('latency-p50').textContent = pct(st.rtts, 50).toFixed(1);
    $('latency-p95').textContent = pct(st.rtts, 95).toFixed(1);
  }
  st.received++;
  $('units-received').textContent = st.received;
  $('step-ms').textContent = stepMs.toFixed(1);
  $('late-units').textContent = late;
  const ts = $('turn-state');
  ts.textContent = TURN[turn] || turn;
  ts.className = TURN[turn] || '';
}

function onMessage(ev) {
  const buf = ev.data;
  const type = new Uint8Array(buf, 0, 1)[0];
  const dv = new DataView(buf, 1);
  const json = () => JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 1)));
  if (type === S.INFO) onInfo(dv);
  else if (type === S.AUDIO) {
    const samples = new Float32Array(buf.slice(5));
    for (let i = 0; i < samples.length; i++) st.recvSq += samples[i] * samples[i];
    st.recvN += samples.length;
    $('recv-rms').textContent = Math.sqrt(st.recvSq / st.recvN).toExponential(3);
    if (st.playback) st.playback.port.postMessage(samples, [samples.buffer]);
  } else if (type === S.VIDEO) {
    const n = dv.getUint8(4), h = dv.getUint16(5, true), w = dv.getUint16(7, true);
    drawAvatar({n, h, w, data: new Uint8Array(buf, 10)});
  } else if (type === S.TEXT) {
    onText(Array.from(new Int16Array(buf.slice(5))));
  } else if (type === S.HELLO) {
    onHello(json());
  } else if (type === S.ERROR) {
    const e = json();
    showError(`server refused a message (${e.code}): ${e.message}`);
    if (e.code === 'pool_full') $('status').textContent = 'server full';
  } else if (type === S.CLOSING) {
    $('status').textContent = 'server closing: ' + json().reason;
  }
}

async function onHello(h) {
  st.hello = h;
  const ctx = st.ctx;
  st.capture = new AudioWorkletNode(ctx, 'unit-capture', {numberOfOutputs: 1,
      processorOptions: {targetRate: h.sample_rate, samplesPerUnit: h.samples_per_unit}});
  st.capture.port.onmessage = (e) => onCaptureUnit(e.data);
  const mute = ctx.createGain();
  mute.gain.value = 0;
  ctx.createMediaStreamSource(st.media).connect(st.capture).connect(mute).connect(ctx.destination);
  st.playback = new AudioWorkletNode(ctx, 'unit-playback', {outputChannelCount: [1],
      processorOptions: {sourceRate: h.sample_rate, samplesPerUnit: h.samples_per_unit, prebufferUnits: PREBUFFER_UNITS}});
  st.playback.port.onmessage = (e) => {
    const r = e.data;
    $('units-played').textContent = r.played;
    $('underruns').textContent = r.underruns;
    $('buffered').textContent = r.buffered.toFixed(1);
    $('play-rms').textContent = r.rms.toExponential(3);
  };
  st.playback.connect(ctx.destination);
  send(C.HELLO, new TextEncoder().encode(JSON.stringify({sample_rate: h.sample_rate, seed: 0, video: true})));
  st.grab = setInterval(grabFrame, 40);
  $('status').textContent = `talking (session ${h.session}, ${h.sample_rate} Hz, ${ctx.sampleRate} Hz audio device)`;
  $('typed').disabled = false;
}

async function start() {
  $('start').disabled = true;
  $('status').textContent = 'asking for microphone and camera';
  try {
    st.media = await navigator.mediaDevices.getUserMedia({
        audio: {channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: false},
        video: {width: 320, height: 240, frameRate: 25}});
  } catch (e) {
    $('status').textContent = 'no microphone/camera: ' + e;
    $('start').disabled = false;
    return;
  }
  $('camera').srcObject = st.media;
  st.ctx = new AudioContext({latencyHint: 'interactive'});
  await st.ctx.audioWorklet.addModule('/static/worklets.js');
  await st.ctx.resume();
  const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
  st.ws = new WebSocket(url);
  st.ws.binaryType = 'arraybuffer';
  st.ws.onmessage = onMessage;
  st.ws.onclose = (e) => {
    $('status').textContent = `closed (${e.code}${e.reason ? ': ' + e.reason : ''})`;
    stop(false);
  };
  $('stop').disabled = false;
}

function stop(closeSocket = true) {
  clearInterval(st.grab);
  if (closeSocket && st.ws) st.ws.close(1000, 'user stopped');
  if (st.media) st.media.getTracks().forEach((t) => t.stop());
  if (st.ctx) st.ctx.close();
  Object.assign(st, {ws: null, ctx: null, media: null, capture: null, playback: null, hello: null});
  $('start').disabled = false;
  $('stop').disabled = true;
  $('typed').disabled = true;
}

$('start').onclick = start;
$('stop').onclick = () => stop(true);
$('camera-toggle').onchange = (e) => {
  st.cameraOn = e.target.checked; // off: no frames are sent, so the units carry camera_on = false
  st.frames = [];
  if (st.media) st.media.getVideoTracks().forEach((t) => { t.enabled = st.cameraOn; });
};
$('typed').onkeydown = (e) => {
  if (e.key !== 'Enter' || !e.target.value.trim()) return;
  send(C.TEXT, new TextEncoder().encode(e.target.value));
  e.target.value = '';
};
