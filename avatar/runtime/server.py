"""`avatar serve CKPT`: a local live server. Audio chunks in over a WebSocket, JPEG frames out; it
also serves a small web page that plays the avatar from the microphone, a local file or a served one.

Protocol (one WebSocket per stream, at ws://HOST:PORT/ws, plus ?token=T when the server has one):

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
         "max_chunk_bytes", "max_ahead_s", "idle_timeout_s", "protocol": 1}     after a valid "start"
  bytes one frame: a 24-byte little-endian header then a JPEG (side by side when stereo):
        magic b"AVF1" | uint32 frame index | float64 timestamp_s (index / fps on the audio timeline)
        | float32 server_ms (chunk received -> frame sent) | uint16 views | uint16 reserved
  text  {"type": "skipped", "frames": [i, j, ...]}       realtime mode: frames that will not come
  text  {"type": "end", "frames": N, "duration_s": S, "skipped": K}   after "stop" (N = ceil(S * fps):
        the stream's frame count; N - K frames were sent)
  text  {"type": "error", "code": ..., "message": ...}    see ERROR_CODES; fatal ones close the socket.

Every protocol error is answered with such an error message (then, when fatal, a close with the code
in FATAL); the only exceptions are what websockets itself refuses below us: a frame over `max_size`
(close 1009) and a text frame that is not UTF-8 (close 1007), each with a close reason.

Frames of a stream come in order, each exactly once; frame t is sent as soon as the audio it needs
has arrived (its own 1/fps of audio plus the model's look-ahead). Memory per client is bounded:
websockets' max_size/max_queue bound what is buffered, audio is consumed as it comes, and frames
are sent with back-pressure (write_limit). Rendering runs on a small thread pool so one client's
render never blocks the event loop: a client that disconnects mid-stream, or misbehaves, only
ends its own session.

Sharing (one client cannot starve another):
* pacing: a client may be at most `max_ahead_s` seconds of audio ahead of real time (counted from its
  first chunk); beyond that the server stops reading it until real time catches up (TCP back-pressure),
  so each stream asks for at most real-time rendering plus a bounded burst;
* small jobs: audio is rendered in jobs of about `job_frames` frames, each client with at most one job
  queued, so the render pool serves the clients round-robin;
* slots: `max_clients` streams (a slot is taken by a valid "start" and freed by "end" or a disconnect);
  a connection that has not sent a valid "start" within `start_timeout_s` of connecting is closed
  (start_timeout), one that sends nothing for `idle_timeout_s` (or does not read its frames for as long)
  is closed (idle_timeout); at most `max_connections` connections at once, started or not.

Security (a server only its own page can use):
* Host: every request (page, /health, /files, /ws) must name this server: 127.0.0.1, localhost or
  [::1] on its port, the interface it was bound to, or the host of an `allow_origins` entry; anything
  else is 403 (DNS rebinding);
* Origin: a request that carries an Origin (every browser WebSocket does) must come from the page's
  own origin (http://<one of those hosts>) or an `allow_origins` entry; anything else is 403;
  non-browser clients send none;
* token: with `token` set, /ws and /files need ?token=T (the page passes on the token of its own URL);
  a WebSocket without it gets an "unauthorized" error;
* /files serves only audio/video files (MEDIA_TYPES) directly inside the folder, no dotfiles, no
  links leading outside it; names are percent-decoded as UTF-8; a bad path is a 400 or 404, never a
  500; GET /files/ is a JSON index {"files": [{"name", "url", "bytes", "type"}]} the page lists.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import struct
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import parse_qs, quote, unquote, urlsplit

import numpy as np

log = logging.getLogger("avatar.serve")

WEB_DIR = Path(__file__).resolve().parent / "web"
HEADER = struct.Struct("<4sIdfHH")
MAGIC = b"AVF1"
PROTOCOL = 1
ERROR_CODES = {
    "bad_json": "a text message that is not a JSON object (or is nested deeper than MAX_JSON_DEPTH)",
    "bad_message": "a JSON message with an unknown or missing 'type'",
    "bad_start": "a 'start' message with a missing or invalid field (sample_rate, format, stereo)",
    "not_started": "audio or 'stop' before a valid 'start'",
    "already_started": "'start' while a stream is running (send 'stop' first)",
    "malformed_audio": "an audio chunk whose length or values do not fit the declared format",
    "message_too_large": "a message over the size limit (fatal: the socket closes with 1009)",
    "server_busy": "too many streams or connections (fatal: closes with 1013)",
    "internal_error": "rendering failed (fatal: closes with 1011)",
    "overloaded": "realtime mode: audio arrives much faster than real time (fatal: closes with 1013)",
    "unauthorized": "the server has a token and the WebSocket URL lacks it (fatal: closes with 1008)",
    "start_timeout": "no valid 'start' within start_timeout_s of connecting (fatal: closes with 1008)",
    "idle_timeout": "nothing received, or frames not read, for idle_timeout_s (fatal: closes with 1008)",
}
FATAL = {"message_too_large": 1009, "server_busy": 1013, "internal_error": 1011, "overloaded": 1013,
         "unauthorized": 1008, "start_timeout": 1008, "idle_timeout": 1008}
MAX_JSON_DEPTH = 8
"""Deepest nesting of arrays/objects accepted in a control message (the protocol needs 1)."""
MEDIA_TYPES = {
    ".wav": "audio/wav", ".mp3": "audio/mpeg", ".flac": "audio/flac", ".ogg": "audio/ogg",
    ".oga": "audio/ogg", ".opus": "audio/ogg", ".m4a": "audio/mp4", ".aac": "audio/aac",
    ".weba": "audio/webm", ".aif": "audio/aiff", ".aiff": "audio/aiff",
    ".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
    ".mkv": "video/x-matroska", ".ogv": "video/ogg",
}
"""What GET /files/NAME serves: audio and video files, by extension (case-insensitive)."""
WEB_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
             ".css": "text/css; charset=utf-8"}
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


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
    """Simultaneous streams (connections that sent a valid 'start' and have not ended)."""
    workers: int = 1
    files: Optional[Path] = None
    """Folder whose audio/video files GET /files/NAME serves (nothing else: see MEDIA_TYPES)."""
    allow_origins: Tuple[str, ...] = ()
    """Extra origins (scheme://host[:port]) whose pages may use the server; their hosts are accepted too."""
    token: Optional[str] = None
    """When set, /ws and /files need ?token=<this>."""
    max_ahead_s: float = 2.0
    """Seconds of audio a client may be ahead of real time; the excess waits (the socket is not read)."""
    start_timeout_s: float = 5.0
    """A connection must send a valid 'start' within this many seconds of connecting."""
    idle_timeout_s: float = 30.0
    """A connection that sends nothing (or reads none of its frames) for this long is closed."""
    max_connections: Optional[int] = None
    """Connections at once, started or not (default 4 x max_clients)."""
    job_frames: int = 2
    """Frames rendered per job on the shared pool (small jobs = clients served round-robin)."""
    max_file_bytes: int = 512 << 20
    """Largest file GET /files/NAME sends (it is read whole)."""
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


def check_origin(origin: str) -> str:
    """An `allow_origins` entry, normalised (lower case, no trailing slash); ValueError when it is not
    scheme://host[:port] with scheme http or https."""
    o = origin.strip().lower().rstrip("/")
    u = urlsplit(o)
    if u.scheme not in ("http", "https") or not u.netloc or u.path or u.query or u.fragment or "@" in u.netloc:
        raise ValueError(f"an allowed origin must look like http://HOST:PORT or https://HOST, got {origin!r}")
    return o


def json_depth(text: str) -> int:
    """Deepest nesting of [ and { in a JSON text (brackets inside strings do not count)."""
    depth = deepest = 0
    in_str = esc = False
    for c in text:
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


class AvatarServer:
    """The asyncio server (also used in-process by tests and the benchmark)."""

    def __init__(self, factory: SourceFactory, cfg: Optional[ServerConfig] = None):
        self.factory, self.cfg = factory, cfg or ServerConfig()
        # the largest chunk any valid stream may send (192 kHz f32) + slack; larger frames are cut
        # off by websockets itself (close 1009), smaller-but-over-the-stream-limit ones get a JSON error
        self.max_size = _max_chunk_bytes(self.cfg, 192000, "f32") + 1024
        self.pool = ThreadPoolExecutor(max_workers=max(1, self.cfg.workers), thread_name_prefix="render")
        self.max_connections = self.cfg.max_connections or 4 * max(1, self.cfg.max_clients)
        self.allow_origins = tuple(check_origin(o) for o in self.cfg.allow_origins)
        self.active = 0  # open WebSocket connections
        self.streams = 0  # of which streaming (hold a slot)
        self.served = 0
        self._server = None
        self.port: Optional[int] = None
        self.hosts: set = set()
        self.origins: set = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> "AvatarServer":
        from websockets.asyncio.server import serve

        self._server = await serve(self._handler, host, port, process_request=self._http,
                                   max_size=self.max_size, max_queue=self.cfg.max_queue,
                                   write_limit=self.cfg.write_limit, compression=None,
                                   open_timeout=10, close_timeout=2)
        self.port = self._server.sockets[0].getsockname()[1]
        names = list(LOOPBACK)
        if host and host not in ("0.0.0.0", "::") and f"[{host}]" not in names:
            names.append(f"[{host}]" if ":" in host else host.lower())
        self.hosts = {f"{n}:{self.port}" for n in names}
        if self.port == 80:
            self.hosts |= set(names)
        self.hosts |= {urlsplit(o).netloc for o in self.allow_origins}
        self.origins = {f"http://{h}" for h in self.hosts} | set(self.allow_origins)
        return self

    def url(self, host: str = "127.0.0.1", kind: str = "page") -> str:
        """The page's address (kind="page") or the stream's (kind="ws"), with the token when there is one."""
        h = "127.0.0.1" if host in ("", "0.0.0.0", "::") else (f"[{host}]" if ":" in host else host)
        base = f"http://{h}:{self.port}/" if kind == "page" else f"ws://{h}:{self.port}/ws"
        return base + (f"?token={self.cfg.token}" if self.cfg.token else "")

    async def wait_closed(self) -> None:
        await self._server.wait_closed()

    async def close(self) -> None:
        self._server.close()
        await self._server.wait_closed()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _token_ok(self, query: str) -> bool:
        if not self.cfg.token:
            return True
        got = parse_qs(query).get("token", [""])[0]
        return hmac.compare_digest(got.encode(), self.cfg.token.encode())

    # ---- HTTP: the page, its scripts, the files index and files, health ---------------------------
    async def _http(self, connection, request):
        try:
            return await self._http_inner(request)
        except Exception:  # a bug: log it, answer 500 without a traceback to the client
            log.exception("avatar serve: HTTP request %r failed", request.path)
            return _respond(500, _err("internal_error", "the server failed to answer this request"))

    async def _http_inner(self, request):
        hosts, origins = request.headers.get_all("Host"), request.headers.get_all("Origin")
        host = hosts[0] if len(hosts) == 1 else None
        if host is None or host.strip().lower() not in self.hosts:
            return _respond(403, _err("forbidden_host", f"Host {host!r} is not this server (expected one of "
                                                        f"{sorted(self.hosts)}; see avatar serve --allow-origin)"))
        origin = origins[0] if len(origins) == 1 else None if not origins else "(several)"
        if origin is not None and origin.strip().lower().rstrip("/") not in self.origins:
            return _respond(403, _err("forbidden_origin", f"pages from {origin!r} may not use this server "
                                                          "(see avatar serve --allow-origin)"))
        path, _, query = request.path.partition("?")
        if path == "/ws":
            return None  # the WebSocket handshake proceeds (the token is checked in _handler)
        if not path.startswith("/"):
            return _respond(400, _err("bad_path", "the request path must start with /"))
        try:
            name = unquote(path, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            return _respond(400, _err("bad_path", "the path is not percent-encoded UTF-8"))
        if not _fetchable(name):
            return _respond(400, _err("bad_path", "the path contains control characters or a backslash"))
        if name == "/health":
            body = {"ok": True, "clients": self.streams, "connections": self.active, "served": self.served,
                    "max_clients": self.cfg.max_clients, "token_required": bool(self.cfg.token),
                    "files": self.cfg.files is not None}
            return _respond(200, json.dumps(body).encode(), "application/json")
        if name in ("/", "/index.html") or name.lstrip("/") in _web_files():
            f = WEB_DIR / ("index.html" if name == "/" else name.lstrip("/"))
            return _respond(200, f.read_bytes(), WEB_TYPES[f.suffix])
        if name in ("/files", "/files/") or name.startswith("/files/"):
            if not self._token_ok(query):
                return _respond(401, _err("unauthorized", "this server needs its token: open the URL that "
                                                          "avatar serve printed (…/?token=…)"))
            if name in ("/files", "/files/"):
                return _respond(200, json.dumps(await asyncio.to_thread(self._index)).encode(),
                                "application/json")
            return await self._file(name[len("/files/"):])
        return _respond(404, _err("not_found", f"no such page: {name[:200]}"))

    def _files_dir(self) -> Optional[Path]:
        return Path(self.cfg.files).resolve() if self.cfg.files is not None else None

    def _servable(self, base: Path, p: Path) -> bool:
        try:
            return (not p.name.startswith(".") and p.suffix.lower() in MEDIA_TYPES and p.is_file()
                    and p.resolve().parent == base)
        except (OSError, ValueError):
            return False

    def _index(self) -> Dict[str, Any]:
        base = self._files_dir()
        out: List[Dict[str, Any]] = []
        if base is not None and base.is_dir():
            for p in sorted(base.iterdir(), key=lambda q: q.name.lower()):
                try:
                    p.name.encode("utf-8")
                except UnicodeEncodeError:  # an undecodable name: no URL can reach it
                    continue
                if len(out) < 1000 and self._servable(base, p) and _fetchable(p.name):
                    out.append({"name": p.name, "url": "/files/" + quote(p.name), "bytes": p.stat().st_size,
                                "type": MEDIA_TYPES[p.suffix.lower()]})
        return {"files": out, "folder": base is not None}

    async def _file(self, fname: str):
        base = self._files_dir()
        if base is None:
            return _respond(404, _err("not_found", "this server shares no files (start it with --files DIR)"))
        if not fname or "/" in fname or fname.startswith("."):
            return _respond(404, _err("not_found", "files are served by name, directly inside the folder; "
                                                   "no dotfiles"))
        if Path(fname).suffix.lower() not in MEDIA_TYPES:
            return _respond(404, _err("not_found", f"only audio and video files are served "
                                                   f"({', '.join(sorted(MEDIA_TYPES))})"))

        def read():
            p = base / fname
            if not p.exists():  # the same name in another Unicode normal form (macOS keeps NFD)
                want = unicodedata.normalize("NFC", fname)
                p = next((q for q in base.iterdir() if unicodedata.normalize("NFC", q.name) == want), p)
            if not self._servable(base, p):
                return None, 0
            size = p.stat().st_size
            return (p.read_bytes() if size <= self.cfg.max_file_bytes else None), size
        data, size = await asyncio.to_thread(read)
        if data is None and not size:
            return _respond(404, _err("not_found", f"no such file: {fname[:200]}"))
        if data is None:
            return _respond(413, _err("too_large", f"{fname[:200]} has {size} bytes, more than the "
                                                   f"{self.cfg.max_file_bytes} this server sends"))
        return _respond(200, data, MEDIA_TYPES[Path(fname).suffix.lower()])

    # ---- one WebSocket connection ------------------------------------------------------------------
    async def _handler(self, ws) -> None:
        if not self._token_ok(ws.request.path.partition("?")[2]):
            await _error(ws, "unauthorized", "this server needs its token: connect to /ws?token=... (open the "
                                             "URL that avatar serve printed)")
            return
        if self.active >= self.max_connections:
            await _error(ws, "server_busy", f"the server already has {self.active} connections "
                                            f"(max_connections={self.max_connections}); try again later")
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


def _fetchable(name: str) -> bool:
    """No control characters and no backslash (what a decoded URL path may hold)."""
    return not any(ord(c) < 32 or c == "\x7f" or c == "\\" for c in name)


def _err(code: str, message: str) -> bytes:
    return json.dumps({"type": "error", "code": code, "message": message}).encode()


def _respond(status: int, body: bytes, ctype: str = "application/json"):
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
              413: "Content Too Large", 500: "Internal Server Error"}.get(status, "Error")
    headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                       ("Cross-Origin-Resource-Policy", "same-origin"), ("X-Frame-Options", "DENY"),
                       ("Content-Security-Policy", "frame-ancestors 'none'"), ("Referrer-Policy", "no-referrer")])
    return Response(status, reason, headers, body)


def _web_files() -> set:
    return {p.name for p in WEB_DIR.iterdir() if p.suffix in WEB_TYPES} if WEB_DIR.is_dir() else set()


async def _error(ws, code: str, message: str) -> None:
    from websockets.exceptions import ConnectionClosed

    try:
        await asyncio.wait_for(ws.send(json.dumps({"type": "error", "code": code, "message": message})), 5)
        if code in FATAL:
            await ws.close(FATAL[code], message[:120])
    except (ConnectionClosed, asyncio.TimeoutError):
        ws.transport.abort()


class _Session:
    def __init__(self, server: AvatarServer, ws):
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
