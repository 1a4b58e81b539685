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
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, quote, unquote, urlsplit

from avatar.runtime.protocol import _err, _error, _max_chunk_bytes
from avatar.runtime.session import _Session

log = logging.getLogger("avatar.serve")

WEB_DIR = Path(__file__).resolve().parent / "web"
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


def check_origin(origin: str) -> str:
    """An `allow_origins` entry, normalised (lower case, no trailing slash); ValueError when it is not
    scheme://host[:port] with scheme http or https."""
    o = origin.strip().lower().rstrip("/")
    u = urlsplit(o)
    if u.scheme not in ("http", "https") or not u.netloc or u.path or u.query or u.fragment or "@" in u.netloc:
        raise ValueError(f"an allowed origin must look like http://HOST:PORT or https://HOST, got {origin!r}")
    return o


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


