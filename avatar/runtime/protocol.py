"""The `avatar serve` wire protocol, shared by the server, its sessions and the Python client: the binary
frame header, the error codes (which are fatal, with their WebSocket close codes), the JSON depth bound,
and the JSON error message every protocol error is answered with."""
from __future__ import annotations

import asyncio
import json
import struct

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


class ProtocolError(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


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


def _max_chunk_bytes(cfg, sr: int, fmt: str) -> int:  # cfg: avatar.runtime.server.ServerConfig
    return int(cfg.max_chunk_s * sr) * (2 if fmt == "pcm16" else 4)


def _err(code: str, message: str) -> bytes:
    return json.dumps({"type": "error", "code": code, "message": message}).encode()


async def _error(ws, code: str, message: str) -> None:
    from websockets.exceptions import ConnectionClosed

    try:
        await asyncio.wait_for(ws.send(json.dumps({"type": "error", "code": code, "message": message})), 5)
        if code in FATAL:
            await ws.close(FATAL[code], message[:120])
    except (ConnectionClosed, asyncio.TimeoutError):
        ws.transport.abort()
