"""`avatar serve CKPT`: a local live server. Audio chunks in over a WebSocket, JPEG frames out; it
also serves a small web page that plays the avatar from the microphone or a chosen file.

Protocol (one WebSocket per stream, at ws://HOST:PORT/ws):

client -> server
  text  {"type": "start", "sample_rate": 48000, "format": "pcm16" | "f32", "stereo": false,
         "realtime": false}
        sample_rate: integer Hz in [8000, 192000] (required); format: little-endian mono samples,
        int16 ("pcm16", the default) or float32 in [-1, 1] ("f32"); stereo: side-by-side stereo frames;
        realtime: live mode for a microphone — when rendering lags behind the audio, only the newest
        `realtime_keep` ready frames are rendered and the older ones are skipped (announced with a
        "skipped" message), so latency stays bounded; false = every frame is rendered.
  bytes audio chunk: mono samples in the declared format, at most `max_chunk_s` seconds each.
  text  {"type": "stop"}     end of the stream: the server renders the remaining frames, then "end".
  text  {"type": "ping"}     -> {"type": "pong"}
server -> client
  text  {"type": "ready", "fps", "width", "height", "views", "lookahead_frames", "header_bytes",
         "max_chunk_bytes", "protocol": 1}                 after a valid "start"
  bytes one frame: a 24-byte little-endian header then a JPEG (side by side when stereo):
        magic b"AVF1" | uint32 frame index | float64 timestamp_s (index / fps on the audio timeline)
        | float32 server_ms (chunk received -> frame sent) | uint16 views | uint16 reserved
  text  {"type": "skipped", "frames": [i, j, ...]}       realtime mode: frames that will not come
  text  {"type": "end", "frames": N, "duration_s": S, "skipped": K}   after "stop" (N = ceil(S * fps):
        the stream's frame count; N - K frames were sent)
  text  {"type": "error", "code": ..., "message": ...}    see ERROR_CODES; fatal ones close the socket.

Frames of a stream come in order, each exactly once; frame t is sent as soon as the audio it needs
has arrived (its own 1/fps of audio plus the model's look-ahead). Memory per client is bounded:
websockets' max_size/max_queue bound what is buffered, audio is consumed as it comes, and frames
are sent with back-pressure (write_limit). Rendering runs on a small thread pool so one client's
render never blocks the event loop: a client that disconnects mid-stream, or misbehaves, only
ends its own session.
"""
from __future__ import annotations

import asyncio
import json
import mimetypes
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

WEB_DIR = Path(__file__).resolve().parent / "web"
HEADER = struct.Struct("<4sIdfHH")
MAGIC = b"AVF1"
PROTOCOL = 1
ERROR_CODES = {
    "bad_json": "a text message that is not a JSON object",
    "bad_message": "a JSON message with an unknown or missing 'type'",
    "bad_start": "a 'start' message with a missing or invalid field (sample_rate, format, stereo)",
    "not_started": "audio or 'stop' before a valid 'start'",
    "already_started": "'start' while a stream is running (send 'stop' first)",
    "malformed_audio": "an audio chunk whose length or values do not fit the declared format",
    "message_too_large": "a message over the size limit (fatal: the socket closes with 1009)",
    "server_busy": "too many clients (fatal: closes with 1013)",
    "internal_error": "rendering failed (fatal: closes with 1011)",
    "overloaded": "realtime mode: audio arrives much faster than real time (fatal: closes with 1013)",
}
FATAL = {"message_too_large": 1009, "server_busy": 1013, "internal_error": 1011, "overloaded": 1013}


class ProtocolError(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


SourceFactory = Callable[[bool], Any]  # stereo -> FrameSource


@dataclass
class ServerConfig:
    jpeg_quality: int = 85
    max_chunk_s: float = 1.0
    max_clients: int = 8
    workers: int = 1
    files: Optional[Path] = None
    max_text_bytes: int = 4096
    """Longest JSON control message."""
    max_queue: int = 4
    """Incoming messages websockets buffers per client before it stops reading the socket."""
    write_limit: int = 1 << 20
    """Outgoing bytes buffered per client before sends wait (back-pressure)."""
    realtime_keep: int = 2
    """Realtime streams: newest ready frames rendered per step when rendering lags (older ones skipped)."""
    realtime_max_pending_s: float = 10.0
    """Realtime streams: audio waiting for the renderer beyond this is an 'overloaded' error."""


def _max_chunk_bytes(cfg: ServerConfig, sr: int, fmt: str) -> int:
    return int(cfg.max_chunk_s * sr) * (2 if fmt == "pcm16" else 4)


class AvatarServer:
    """The asyncio server (also used in-process by tests and the benchmark)."""

    def __init__(self, factory: SourceFactory, cfg: Optional[ServerConfig] = None):
        self.factory, self.cfg = factory, cfg or ServerConfig()
        # the largest chunk any valid stream may send (192 kHz f32) + slack; larger frames are cut
        # off by websockets itself (close 1009), smaller-but-over-the-stream-limit ones get a JSON error
        self.max_size = _max_chunk_bytes(self.cfg, 192000, "f32") + 1024
        self.pool = ThreadPoolExecutor(max_workers=max(1, self.cfg.workers), thread_name_prefix="render")
        self.active = 0
        self.served = 0
        self._server = None
        self.port: Optional[int] = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> "AvatarServer":
        from websockets.asyncio.server import serve

        self._server = await serve(self._handler, host, port, process_request=self._http,
                                   max_size=self.max_size, max_queue=self.cfg.max_queue,
                                   write_limit=self.cfg.write_limit, compression=None)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def wait_closed(self) -> None:
        await self._server.wait_closed()

    async def close(self) -> None:
        self._server.close()
        await self._server.wait_closed()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # ---- HTTP: the page, its scripts, optional audio files, health ---------------------------------
    def _http(self, connection, request):
        from websockets.datastructures import Headers
        from websockets.http11 import Response

        path = request.path.split("?", 1)[0]
        if path == "/ws":
            return None  # the WebSocket handshake proceeds

        def respond(status: int, body: bytes, ctype: str):
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}.get(status, "Error")
            headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(body))),
                               ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")])
            return Response(status, reason, headers, body)

        if path == "/health":
            body = json.dumps({"ok": True, "clients": self.active, "served": self.served}).encode()
            return respond(200, body, "application/json")
        if path == "/":
            path = "/index.html"
        name = path.lstrip("/")
        if name in _web_files():
            f = WEB_DIR / name
            return respond(200, f.read_bytes(), mimetypes.guess_type(f.name)[0] or "application/octet-stream")
        if name.startswith("files/") and self.cfg.files is not None:
            fname = name[len("files/"):]
            base = Path(self.cfg.files).resolve()
            f = (base / fname).resolve()
            if "/" not in fname and f.parent == base and f.is_file():
                return respond(200, f.read_bytes(), mimetypes.guess_type(f.name)[0] or "application/octet-stream")
        return respond(404, f"not found: {path}\n".encode(), "text/plain; charset=utf-8")

    # ---- one WebSocket stream ---------------------------------------------------------------------
    async def _handler(self, ws) -> None:
        if self.active >= self.cfg.max_clients:
            await _error(ws, "server_busy", f"the server already has {self.active} clients "
                                            f"(max_clients={self.cfg.max_clients}); try again later")
            return
        self.active += 1
        self.served += 1
        session = _Session(self, ws)
        try:
            await session.run()
        except Exception:  # the connection died under us (disconnect mid-stream...)
            pass
        finally:
            self.active -= 1
            await session.close()


def _web_files() -> set:
    return {p.name for p in WEB_DIR.iterdir() if p.suffix in (".html", ".js", ".css")} if WEB_DIR.is_dir() else set()


async def _error(ws, code: str, message: str) -> None:
    from websockets.exceptions import ConnectionClosed

    try:
        await ws.send(json.dumps({"type": "error", "code": code, "message": message}))
        if code in FATAL:
            await ws.close(FATAL[code], message[:120])
    except ConnectionClosed:
        pass


class _Session:
    def __init__(self, server: AvatarServer, ws):
        self.server, self.ws, self.cfg = server, ws, server.cfg
        self.source = None
        self.resampler = None
        self.fmt = "pcm16"
        self.sr = 0
        self.samples_in = 0
        self.last_frame = -1
        self.views = 1
        self.limit = 0
        self.realtime = False
        self.pending: List[np.ndarray] = []
        self.pending_n = 0
        self.pending_t = 0.0
        self.wake: Optional[asyncio.Event] = None
        self.task: Optional[asyncio.Task] = None
        self.stopping = False
        self.skipped = 0

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

    async def run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for msg in self.ws:
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

    async def _text(self, msg: str) -> None:
        if len(msg.encode()) > self.cfg.max_text_bytes:
            raise ProtocolError("message_too_large", f"text message of {len(msg.encode())} bytes exceeds the "
                                                     f"limit of {self.cfg.max_text_bytes} bytes for control messages")
        try:
            obj = json.loads(msg)
        except json.JSONDecodeError as e:
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
            raise ProtocolError("bad_message", f"unknown message type {kind!r} (expected 'start', 'stop' or 'ping')")

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
        loop = asyncio.get_running_loop()
        self.source = await loop.run_in_executor(self.server.pool, self.server.factory, stereo)
        self.resampler = StreamResampler(sr)
        self.sr, self.fmt, self.views = sr, fmt, 2 if stereo else 1
        self.samples_in, self.last_frame, self.skipped = 0, -1, 0
        self.limit = _max_chunk_bytes(self.cfg, sr, fmt)
        self.realtime, self.stopping, self.pending, self.pending_n = realtime, False, [], 0
        if realtime:
            self.wake = asyncio.Event()
            self.task = asyncio.create_task(self._realtime_loop())
        src = self.source
        await self.ws.send(json.dumps({
            "type": "ready", "protocol": PROTOCOL, "fps": src.fps, "width": src.width * self.views,
            "height": src.height, "views": self.views, "lookahead_frames": src.lookahead,
            "header_bytes": HEADER.size, "max_chunk_bytes": self.limit, "sample_rate": sr, "format": fmt,
            "realtime": realtime}))

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
        if self.realtime:
            if self.pending_n + len(x) > self.cfg.realtime_max_pending_s * self.sr:
                raise ProtocolError("overloaded", f"more than {self.cfg.realtime_max_pending_s:g} s of audio waiting "
                                                  "for the renderer: realtime streams must send audio at its own speed")
            self.pending.append(x)
            self.pending_n += len(x)
            self.pending_t = t_in
            self.wake.set()
            return
        await self._render(lambda: self.source.push_audio(self.resampler.push(x)), t_in)

    async def _realtime_loop(self) -> None:
        """Realtime streams: render what the audio received so far makes ready, newest first."""
        from websockets.exceptions import ConnectionClosed

        keep = self.cfg.realtime_keep
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                if self.pending:
                    x = np.concatenate(self.pending)
                    self.pending, self.pending_n = [], 0
                    src, res = self.source, self.resampler
                    await self._render(lambda: src.push_audio(res.push(x), keep_last=keep), self.pending_t)
                if self.stopping and not self.pending:
                    return
        except ProtocolError as e:  # rendering failed: tell the client (fatal), end the stream
            await _error(self.ws, e.code, str(e))
        except ConnectionClosed:
            pass

    async def _stop(self) -> None:
        if self.source is None:
            raise ProtocolError("not_started", "'stop' before 'start'")
        if self.task is not None:
            self.stopping = True
            self.wake.set()
            await self.task
            self.task = None
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

    async def _render(self, fn, t_in: float) -> None:
        loop = asyncio.get_running_loop()
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
        try:
            frames = await loop.run_in_executor(self.server.pool, work)
        except Exception as e:  # a bug or a bad model: tell this client, keep the server
            raise ProtocolError("internal_error", f"rendering failed: {type(e).__name__}: {e}") from e
        src = self.source
        if src is not None and getattr(src, "skipped", None):
            skipped, src.skipped = list(src.skipped), []
            self.skipped += len(skipped)
            await self.ws.send(json.dumps({"type": "skipped", "frames": skipped}))
        for index, ts, jpg in frames:
            ms = (time.perf_counter() - t_in) * 1000.0
            await self.ws.send(HEADER.pack(MAGIC, index, ts, ms, self.views, 0) + jpg)
            self.last_frame = index


