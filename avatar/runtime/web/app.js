// avatar live page: captures audio (microphone, a local file or a file the server shares) with an
// AudioWorklet, streams it as float32 to ws://<host>/ws (protocol in avatar/runtime/server.py) and draws
// the JPEG frames that come back on a canvas, in sync with the audio. No external scripts.
// URL parameters: token=T (the server's per-run token, passed on to /ws and /files), play=NAME (play
// the shared file NAME at once), stereo=1, realtime=0 (every frame, none skipped), delay=S (audio
// delay for lip sync, file mode), autostart=1 [&file=URL] (start the microphone, or the file at URL).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const HEADER = 24;
  const token = params.get("token") || "";
  const withToken = (url) => token ? `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}` : url;
  // exposed for tests and the curious
  const state = window.avatarState = {
    status: "idle", ready: null, frames: 0, drawn: 0, lastIndex: -1, outOfOrder: 0,
    errors: [], ended: false, endInfo: null, latencyMs: [], audioSentS: 0, skipped: 0,
  };
  let ctx = null, ws = null, node = null, source = null, sink = null, micStream = null;
  let startAt = 0, syncDelay = 0, queue = [], sent = [], running = false, streaming = false, raf = 0, mode = "";

  function setStatus(s) { state.status = s; $("status").textContent = s; }
  function stats() {
    const l = state.latencyMs.slice().sort((a, b) => a - b);
    const p50 = l.length ? l[Math.floor(l.length / 2)].toFixed(0) : "-";
    $("stats").textContent = `frames ${state.frames}  skipped ${state.skipped}  drawn ${state.drawn}  latency p50 ${p50} ms`;
  }

  function stop() {
    running = false;
    if (source) { try { source.disconnect(); if (source.stop) source.stop(); } catch (e) {} }
    if (micStream) micStream.getTracks().forEach((t) => t.stop());
    if (node && streaming) node.port.postMessage("flush");  // the worklet answers "flushed" -> "stop"
    source = null; micStream = null;
    $("stop").disabled = true;
  }

  function onMessage(ev) {
    if (typeof ev.data === "string") {
      const msg = JSON.parse(ev.data);
      if (msg.type === "ready") {
        state.ready = msg;
        const c = $("view");
        c.width = msg.width; c.height = msg.height;
        c.hidden = false; $("idle").hidden = true;
      } else if (msg.type === "skipped") {  // realtime mode: rendering lagged, these frames won't come
        state.skipped += msg.frames.length;
        state.lastIndex = Math.max(state.lastIndex, ...msg.frames);
      } else if (msg.type === "error") {
        state.errors.push(msg);
        setStatus(`server error (${msg.code}): ${msg.message}`);
        if (msg.code === "unauthorized") setStatus("this server needs its token: open the exact URL that avatar serve printed (it ends in ?token=…)");
      } else if (msg.type === "end") {
        state.ended = true; state.endInfo = msg;
        setStatus(`done: ${msg.frames} frames for ${msg.duration_s.toFixed(2)} s of audio`);
      }
      return;
    }
    const buf = ev.data, dv = new DataView(buf);
    const magic = String.fromCharCode(dv.getUint8(0), dv.getUint8(1), dv.getUint8(2), dv.getUint8(3));
    if (magic !== "AVF1") { state.errors.push({ code: "client", message: "bad frame magic" }); return; }
    const index = dv.getUint32(4, true), ts = dv.getFloat64(8, true);
    if (index !== state.lastIndex + 1) state.outOfOrder++;
    state.lastIndex = index; state.frames++;
    // latency: now minus when the audio this frame needs had been sent
    const r = state.ready, need = ts + (1 + r.lookahead_frames) / r.fps;
    const chunk = sent.find((s) => s.until >= need - 1e-6);
    if (chunk) state.latencyMs.push(performance.now() - chunk.at);
    createImageBitmap(new Blob([buf.slice(HEADER)], { type: "image/jpeg" })).then((bmp) => {
      queue.push({ index, ts, bmp });
      queue.sort((a, b) => a.index - b.index);
    });
  }

  function draw() {
    raf = requestAnimationFrame(draw);
    if (!queue.length || !ctx) return;
    // file: show the newest frame whose time has come on the (delayed) audio clock; mic: newest
    const clock = ctx.currentTime - startAt - syncDelay;
    let pick = -1;
    for (let i = 0; i < queue.length; i++) {
      if (mode === "mic" || queue[i].ts <= clock || (state.ended && !running && i === 0)) pick = i; else break;
    }
    if (pick < 0) return;
    const f = queue[pick];
    queue.splice(0, pick + 1).forEach((q) => { if (q !== f) q.bmp.close(); });
    $("view").getContext("2d").drawImage(f.bmp, 0, 0);
    f.bmp.close();
    state.drawn++;
    stats();
  }

  async function begin(kind, fileUrl, name) {
    const label = name || (fileUrl ? decodeURIComponent(fileUrl.split("?")[0].split("/").pop()) : "");
    stop();
    streaming = false;
    if (node) { node.port.onmessage = null; node.disconnect(); node = null; }
    state.frames = 0; state.drawn = 0; state.lastIndex = -1; state.outOfOrder = 0; state.errors = [];
    state.ended = false; state.latencyMs = []; state.audioSentS = 0; state.skipped = 0; queue = []; sent = [];
    mode = kind;
    setStatus("connecting…");
    if (!ctx) {
      ctx = new AudioContext();
      await ctx.audioWorklet.addModule("worklet.js");
    }
    await Promise.race([ctx.resume(), new Promise((ok) => setTimeout(ok, 500))]);
    if (ctx.state !== "running") {  // the browser wants a click before it plays sound
      setStatus("click anywhere on the page to start");
      await new Promise((ok) => document.addEventListener("pointerdown", ok, { once: true }));
      await ctx.resume();
    }
    if (ws) ws.close();
    ws = new WebSocket(withToken(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`));
    ws.binaryType = "arraybuffer";
    await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = () => fail(new Error("cannot connect to the server")); });
    ws.onmessage = onMessage;
    ws.onclose = (e) => { if (!state.ended && e.code !== 1000) setStatus(`disconnected (${e.code}) ${e.reason}`); };
    // realtime: the server skips frames rather than fall behind the live audio
    ws.send(JSON.stringify({ type: "start", sample_rate: ctx.sampleRate, format: "f32",
                             stereo: $("stereo").checked, realtime: params.get("realtime") !== "0" }));
    node = new AudioWorkletNode(ctx, "capture");
    sink = ctx.createGain(); sink.gain.value = 0;  // keeps the worklet pulled without playing it
    node.connect(sink).connect(ctx.destination);
    const sock = ws;
    streaming = true;
    node.port.onmessage = (e) => {
      if (sock !== ws || sock.readyState !== WebSocket.OPEN || !streaming) return;
      if (e.data === "flushed") {
        streaming = false;
        sock.send(JSON.stringify({ type: "stop" }));
        return;
      }
      ws.send(e.data.buffer);
      state.audioSentS += e.data.length / ctx.sampleRate;
      sent.push({ until: state.audioSentS, at: performance.now() });
    };
    if (kind === "file") {
      setStatus("loading audio…");
      const resp = await fetch(fileUrl);
      if (!resp.ok) {
        let why = `HTTP ${resp.status}`;
        try { why = (await resp.json()).message || why; } catch (e) {}
        throw new Error(`cannot load ${label}: ${why}`);
      }
      const data = await resp.arrayBuffer();
      const audio = await ctx.decodeAudioData(data);
      source = ctx.createBufferSource();
      source.buffer = audio;
      syncDelay = parseFloat(params.get("delay") || "0.35");  // audible audio waits for the frames
      const delay = ctx.createDelay(5.0);
      delay.delayTime.value = syncDelay;
      source.connect(node);
      source.connect(delay).connect(ctx.destination);
      source.onended = () => setTimeout(() => { if (running) stop(); }, 100);
      running = true;
      startAt = ctx.currentTime;
      source.start();
      setStatus(`playing ${label}`);
    } else {
      micStream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true } });
      source = ctx.createMediaStreamSource(micStream);
      source.connect(node);
      syncDelay = 0; running = true; startAt = ctx.currentTime;
      setStatus("listening to the microphone");
    }
    $("stop").disabled = false;
    if (!raf) raf = requestAnimationFrame(draw);
  }

  const fail = (e) => { state.errors.push({ code: "client", message: String(e) }); setStatus(`error: ${e.message || e}`); };
  $("mic").onclick = () => begin("mic").catch(fail);
  $("stop").onclick = () => stop();
  $("file").onchange = (e) => {
    const f = e.target.files[0];
    if (f) begin("file", URL.createObjectURL(f), f.name).catch(fail);
  };
  const served = (name) => withToken(`/files/${encodeURIComponent(name)}`);

  // the files the server shares (GET /files/ -> {"files": [{name, url, bytes, type}], "folder"})
  async function listFiles() {
    const note = $("files-note"), list = $("files");
    let resp;
    try { resp = await fetch(withToken("/files/")); } catch (e) { note.textContent = `cannot reach the server: ${e}`; return; }
    if (resp.status === 401) {
      note.textContent = "this server needs its token: open the exact URL that avatar serve printed (it ends in ?token=…)";
      return;
    }
    if (!resp.ok) { note.textContent = `cannot list the shared files (HTTP ${resp.status})`; return; }
    const index = await resp.json();
    state.files = index.files.map((f) => f.name);
    if (!index.folder) {
      note.textContent = "the server shares no folder: start it with  avatar serve CKPT --files DIR  to list the audio and video files of DIR here";
      return;
    }
    if (!index.files.length) { note.textContent = "the shared folder has no audio or video files"; return; }
    note.textContent = "press one to play it (or open /?play=NAME):";
    for (const f of index.files) {
      const li = document.createElement("li"), b = document.createElement("button"), size = document.createElement("span");
      b.textContent = `▶ ${f.name}`;
      b.onclick = () => begin("file", withToken(f.url), f.name).catch(fail);
      size.className = "size";
      size.textContent = f.bytes >= 1e6 ? `${(f.bytes / 1e6).toFixed(1)} MB` : `${Math.max(1, Math.round(f.bytes / 1e3))} kB`;
      li.append(b, size);
      list.append(li);
    }
  }
  state.files = null;
  listFiles().catch((e) => { $("files-note").textContent = `cannot list the shared files: ${e}`; });
  if (params.get("stereo") === "1") $("stereo").checked = true;
  if (params.get("play")) begin("file", served(params.get("play")), params.get("play")).catch(fail);
  else if (params.get("autostart") === "1") {
    if (params.get("file")) begin("file", withToken(params.get("file"))).catch(fail);
    else begin("mic").catch(fail);
  }
})();
