"""One client connection of `avatar serve` (avatar.runtime.server): its handshake and timeouts, the
start/audio/stop messages, per-client pacing and the round-robin render jobs that keep one client from
starving another, and sending frames back (wire format: avatar.runtime.protocol)."""
from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import numpy as np

from avatar.runtime.protocol import (
    FATAL,
    HEADER,
    MAGIC,
    MAX_JSON_DEPTH,
    PROTOCOL,
    ProtocolError,
    _error,
    _max_chunk_bytes,
    json_depth,
)

if TYPE_CHECKING:
    from avatar.runtime.server import AvatarServer

log = logging.getLogger("avatar.serve")


class _Session:
    def __init__(self, server: "AvatarServer", ws):
        self.server, self.ws, self.cfg = server, ws, server.cfg
        self.t_connect = time.monotonic()
        self.started_once = False
        self.slot = False
        self.source = None
        self.resampler = None
        self.fmt = "pcm16"
        self.sr = 0
        self.piece = 1
        self.audio_s = 0.0
        self.t_audio0: Optional[float] = None
        self.last_frame = -1
        self.views = 1
        self.limit = 0
        self.realtime = False
        self.pending: List[np.ndarray] = []  # received input-rate audio not yet rendered
        self.pending_n = 0
        self.received = self.taken = 0  # input samples received / handed to the renderer
        self.marks: List[Tuple[int, float]] = []  # (received samples after a chunk, when it came)
        self.wake: Optional[asyncio.Event] = None
        self.progress: Optional[asyncio.Event] = None
        self.task: Optional[asyncio.Task] = None
        self.stopping = False
        self.skipped = 0

    def _release(self) -> None:
        if self.slot:
            self.slot = False
            self.server.streams -= 1

    async def close(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass
        self.task = None
        self.source = None
        self.pending = []
        self._release()

    async def run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        while True:
            if self.started_once:
                wait, code = self.cfg.idle_timeout_s, "idle_timeout"
                why = f"nothing received for {self.cfg.idle_timeout_s:g} s (send audio, 'stop' or 'ping')"
            else:
                wait = self.cfg.start_timeout_s - (time.monotonic() - self.t_connect)
                code = "start_timeout"
                why = (f"no valid 'start' within {self.cfg.start_timeout_s:g} s of connecting: send "
                       "{\"type\": \"start\", \"sample_rate\": ..., \"format\": ...} first")
            try:
                msg = await asyncio.wait_for(self.ws.recv(), max(0.0, wait))
            except asyncio.TimeoutError:
                await _error(self.ws, code, why)
                return
            except ConnectionClosed:
                return
            try:
                if isinstance(msg, str):
                    await self._text(msg)
                else:
                    await self._audio(msg)
            except ProtocolError as e:
                await _error(self.ws, e.code, str(e))
                if e.code in FATAL:
                    return
            except ConnectionClosed:
                return
            except Exception as e:  # a bug: still answer in the protocol, then close this client only
                log.exception("avatar serve: session failed")
                await _error(self.ws, "internal_error", f"server error: {type(e).__name__}: {e}")
                return

    async def _text(self, msg: str) -> None:
        if len(msg.encode()) > self.cfg.max_text_bytes:
            raise ProtocolError("message_too_large", f"text message of {len(msg.encode())} bytes exceeds the "
                                                     f"limit of {self.cfg.max_text_bytes} bytes for control messages")
        if json_depth(msg) > MAX_JSON_DEPTH:
            raise ProtocolError("bad_json", f"text messages must be flat JSON objects: this one nests deeper than "
                                            f"{MAX_JSON_DEPTH} levels")
        try:
            obj = json.loads(msg)
        except (json.JSONDecodeError, RecursionError) as e:
            raise ProtocolError("bad_json", f"text messages must be JSON objects: {e}") from None
        if not isinstance(obj, dict):
            raise ProtocolError("bad_json", f"text messages must be JSON objects, got {type(obj).__name__}")
        kind = obj.get("type")
        if kind == "start":
            await self._start(obj)
        elif kind == "stop":
            await self._stop()
        elif kind == "ping":
            await self.ws.send(json.dumps({"type": "pong"}))
        else:
            raise ProtocolError("bad_message", f"unknown message type {kind!r} (expected 'start', 'stop' or 'ping')"
                                if isinstance(kind, (str, type(None))) else
                                f"'type' must be a string ('start', 'stop' or 'ping'), got {type(kind).__name__}")

    async def _start(self, obj: Dict[str, Any]) -> None:
        from avatar.audio.stream import StreamResampler

        if self.source is not None:
            raise ProtocolError("already_started", "a stream is already running: send {\"type\": \"stop\"} first")
        unknown = sorted(set(obj) - {"type", "sample_rate", "format", "stereo", "realtime"})
        if unknown:
            raise ProtocolError("bad_start", f"unknown field(s) {unknown} in 'start' "
                                             "(valid: sample_rate, format, stereo, realtime)")
        sr = obj.get("sample_rate")
        if sr is None:
            raise ProtocolError("bad_start", "'start' needs 'sample_rate': the audio rate in Hz (e.g. 48000)")
        if isinstance(sr, bool) or not isinstance(sr, int) or not 8000 <= sr <= 192000:
            raise ProtocolError("bad_start", f"'sample_rate' must be an integer number of Hz in "
                                             f"[8000, 192000], got {sr!r}")
        fmt = obj.get("format", "pcm16")
        if fmt not in ("pcm16", "f32"):
            raise ProtocolError("bad_start", f"'format' must be 'pcm16' (int16 LE) or 'f32' (float32 LE), got {fmt!r}")
        stereo = obj.get("stereo", False)
        if not isinstance(stereo, bool):
            raise ProtocolError("bad_start", f"'stereo' must be true or false, got {stereo!r}")
        realtime = obj.get("realtime", False)
        if not isinstance(realtime, bool):
            raise ProtocolError("bad_start", f"'realtime' must be true or false, got {realtime!r}")
        if self.server.streams >= self.cfg.max_clients:
            raise ProtocolError("server_busy", f"the server already streams to {self.server.streams} clients "
                                               f"(max_clients={self.cfg.max_clients}); try again later")
        self.server.streams += 1
        self.slot = True
        loop = asyncio.get_running_loop()
        try:
            self.source = await loop.run_in_executor(self.server.pool, self.server.factory, stereo)
        except Exception as e:
            self._release()
            raise ProtocolError("internal_error", f"cannot start a stream: {type(e).__name__}: {e}") from e
        self.started_once = True
        self.resampler = StreamResampler(sr)
        self.sr, self.fmt, self.views = sr, fmt, 2 if stereo else 1
        self.samples_in, self.last_frame, self.skipped = 0, -1, 0
        self.audio_s, self.t_audio0 = 0.0, None
        self.piece = max(1, math.ceil(sr * max(1, self.cfg.job_frames) / self.source.fps))
        self.limit = _max_chunk_bytes(self.cfg, sr, fmt)
        self.realtime, self.stopping, self.pending, self.pending_n = realtime, False, [], 0
        self.received = self.taken = 0
        self.marks = []
        self.wake, self.progress = asyncio.Event(), asyncio.Event()
        self.task = asyncio.create_task(self._render_loop())
        src = self.source
        await self.ws.send(json.dumps({
            "type": "ready", "protocol": PROTOCOL, "fps": src.fps, "width": src.width * self.views,
            "height": src.height, "views": self.views, "lookahead_frames": src.lookahead,
            "header_bytes": HEADER.size, "max_chunk_bytes": self.limit, "sample_rate": sr, "format": fmt,
            "realtime": realtime, "max_ahead_s": self.cfg.max_ahead_s, "idle_timeout_s": self.cfg.idle_timeout_s}))

    async def _pace(self, seconds: float) -> None:
        """Keep this client at most max_ahead_s of audio ahead of real time: wait (without reading
        the socket) until the chunk fits."""
        now = time.monotonic()
        if self.t_audio0 is None:
            self.t_audio0 = now
        ahead = self.audio_s + seconds - (now - self.t_audio0)
        if ahead > self.cfg.max_ahead_s:
            await asyncio.sleep(ahead - self.cfg.max_ahead_s)
        self.audio_s += seconds

    async def _audio(self, data: bytes) -> None:
        t_in = time.perf_counter()
        if self.source is None:
            raise ProtocolError("not_started", "audio before 'start': send {\"type\": \"start\", \"sample_rate\": "
                                               "..., \"format\": ...} first")
        if len(data) > self.limit:
            raise ProtocolError("message_too_large", f"audio chunk of {len(data)} bytes exceeds the limit of "
                                                     f"{self.limit} bytes ({self.cfg.max_chunk_s:g} s of {self.fmt} "
                                                     f"at {self.sr} Hz); send smaller chunks")
        width = 2 if self.fmt == "pcm16" else 4
        if len(data) % width:
            raise ProtocolError("malformed_audio", f"audio chunk of {len(data)} bytes is not a whole number of "
                                                   f"{self.fmt} samples ({width} bytes each)")
        if self.fmt == "pcm16":
            x = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
        else:
            x = np.frombuffer(data, "<f4").astype(np.float32)
            if not np.isfinite(x).all():
                raise ProtocolError("malformed_audio", "f32 audio chunk contains NaN or Inf samples")
            if np.abs(x).max(initial=0.0) > 16.0:
                raise ProtocolError("malformed_audio", "f32 audio must be in [-1, 1] (found |x| > 16: "
                                                       "is it int16 data declared as f32?)")
        await self._pace(len(x) / self.sr)
        if self.realtime:
            if self.pending_n + len(x) > self.cfg.realtime_max_pending_s * self.sr:
                raise ProtocolError("overloaded", f"more than {self.cfg.realtime_max_pending_s:g} s of audio waiting "
                                                  "for the renderer: realtime streams must send audio at its own speed")
        else:  # back-pressure: at most ~1 s of audio waits here; beyond it the socket is not read
            while self.pending_n > self.sr and not self.task.done():
                self.progress.clear()
                await self.progress.wait()
        if not len(x) or self.task.done():
            return
        self.pending.append(x)
        self.pending_n += len(x)
        self.received += len(x)
        self.marks.append((self.received, t_in))
        self.wake.set()

    def _take(self, n: Optional[int]) -> Tuple[np.ndarray, float]:
        """Up to n pending input samples (all when n is None) and when the last of them arrived."""
        parts, got = [], 0
        while self.pending and (n is None or got < n):
            x = self.pending[0]
            k = len(x) if n is None else min(len(x), n - got)
            parts.append(x[:k])
            got += k
            if k == len(x):
                self.pending.pop(0)
            else:
                self.pending[0] = x[k:]
        self.pending_n -= got
        self.taken += got
        while len(self.marks) > 1 and self.marks[0][0] < self.taken:
            self.marks.pop(0)
        t = self.marks[0][1] if self.marks else time.perf_counter()
        return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), t

    async def _render_loop(self) -> None:
        """Renders the pending audio of this stream, one small job at a time (one job queued per
        stream: the pool serves streams round-robin). Realtime streams: what the audio received so
        far makes ready, newest frames first (older ones skipped)."""
        from websockets.exceptions import ConnectionClosed

        keep = self.cfg.realtime_keep
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                src, res = self.source, self.resampler
                while self.pending:
                    if self.realtime:
                        x, t_in = self._take(None)
                        parts = [x[i:i + self.piece] for i in range(0, len(x), self.piece)]
                        ys = [await self._job(lambda p=p: res.push(p)) for p in parts[:-1]]  # small jobs
                        last = parts[-1]
                        await self._render(lambda: src.push_audio(np.concatenate(ys + [res.push(last)]),
                                                                  keep_last=keep), t_in)
                    else:
                        x, t_in = self._take(self.piece)
                        await self._render(lambda: src.push_audio(res.push(x)), t_in)
                    self.progress.set()
                if self.stopping:
                    return
        except ProtocolError as e:  # rendering failed: tell the client (fatal), end the stream
            await _error(self.ws, e.code, str(e))
        except ConnectionClosed:
            pass
        finally:
            self.progress.set()

    async def _stop(self) -> None:
        if self.source is None:
            raise ProtocolError("not_started", "'stop' before 'start'")
        self.stopping = True
        self.wake.set()
        await self.task
        self.task = None
        if self.pending:  # the render loop failed (and told the client)
            return
        t_in = time.perf_counter()

        def finish():
            tail = self.resampler.flush()
            return self.source.push_audio(tail) + self.source.flush()
        n_in = self.resampler._S
        await self._render(finish, t_in)
        dur = n_in / self.sr
        await self.ws.send(json.dumps({"type": "end", "frames": self.last_frame + 1, "duration_s": dur,
                                       "skipped": self.skipped}))
        self.source = None
        self._release()

    async def _job(self, fn):
        try:
            return await asyncio.get_running_loop().run_in_executor(self.server.pool, fn)
        except Exception as e:  # a bug or a bad model: tell this client, keep the server
            raise ProtocolError("internal_error", f"rendering failed: {type(e).__name__}: {e}") from e

    async def _render(self, fn, t_in: float) -> None:
        q = self.cfg.jpeg_quality

        def work():
            import cv2

            out = []
            for f in fn():
                ok, jpg = cv2.imencode(".jpg", np.ascontiguousarray(f.image[..., ::-1]),
                                       [cv2.IMWRITE_JPEG_QUALITY, int(q)])
                if not ok:
                    raise RuntimeError("JPEG encoding failed")
                out.append((f.index, f.timestamp_s, jpg.tobytes()))
            return out
        frames = await self._job(work)
        src = self.source
        if src is not None and getattr(src, "skipped", None):
            skipped, src.skipped = list(src.skipped), []
            self.skipped += len(skipped)
            await self._send(json.dumps({"type": "skipped", "frames": skipped}))
        for index, ts, jpg in frames:
            ms = (time.perf_counter() - t_in) * 1000.0
            await self._send(HEADER.pack(MAGIC, index, ts, ms, self.views, 0) + jpg)
            self.last_frame = index

    async def _send(self, data) -> None:
        """Send with back-pressure; a client that reads nothing for idle_timeout_s is dropped."""
        try:
            await asyncio.wait_for(self.ws.send(data), self.cfg.idle_timeout_s)
        except asyncio.TimeoutError:
            self.ws.transport.abort()
            raise ProtocolError("idle_timeout", f"frames not read for {self.cfg.idle_timeout_s:g} s") from None
