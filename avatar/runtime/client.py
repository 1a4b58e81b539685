"""A Python client of `avatar serve`: stream a waveform over the WebSocket, collect the frames
(`stream_audio`, used by the tests and `avatar bench drive`)."""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from avatar.audio.timeline import SAMPLE_RATE
from avatar.runtime.protocol import HEADER, MAGIC


# ----------------------------------------------------------------------------- a Python client
@dataclass
class StreamResult:
    """What a client saw for one stream."""

    ready: Dict[str, Any]
    frames: List[Tuple[int, float, bytes]] = field(default_factory=list)  # (index, timestamp_s, jpeg)
    recv_s: List[float] = field(default_factory=list)  # client clock when each frame arrived
    server_ms: List[float] = field(default_factory=list)
    chunk_sent_s: List[float] = field(default_factory=list)  # client clock when chunk i was sent
    chunk_end_sample: List[int] = field(default_factory=list)  # input samples sent up to chunk i
    end: Optional[Dict[str, Any]] = None
    errors: List[Dict[str, Any]] = field(default_factory=list)
    skipped: List[int] = field(default_factory=list)

    def latencies_ms(self) -> np.ndarray:
        """Per frame: arrival time minus the send time of the chunk that completed the audio the
        frame needs (its interval + look-ahead) — "audio chunk in -> frame out"."""
        from avatar.audio.timeline import frame_sample

        fps, la = self.ready["fps"], self.ready["lookahead_frames"]
        ends = np.asarray(self.chunk_end_sample)
        out = []
        for (idx, _, _), r in zip(self.frames, self.recv_s):
            need = frame_sample(idx + 1 + la, fps)  # 16 kHz samples
            k = int(np.searchsorted(ends, need))  # first chunk with cumulative samples >= need
            if k >= len(ends):  # completed only by the final flush
                k = len(ends) - 1
            out.append((r - self.chunk_sent_s[k]) * 1000.0)
        return np.asarray(out)


async def stream_audio(uri: str, wav: np.ndarray, sr: int, *, chunk_ms: float = 40.0, fmt: str = "pcm16",
                       stereo: bool = False, realtime: bool = False, live: bool = False,
                       timeout: float = 120.0) -> StreamResult:
    """Stream mono audio `wav` [S] at `sr` to an avatar server; collect every frame until "end".
    realtime=True paces chunks at the speed of the audio (as a microphone would); live=True asks
    for the server's realtime mode (frames skipped when rendering lags)."""
    from websockets.asyncio.client import connect

    wav = np.asarray(wav, np.float32)
    step = max(1, int(sr * chunk_ms / 1000))
    async with connect(uri, max_size=16 << 20) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": sr, "format": fmt, "stereo": stereo,
                                  "realtime": live}))
        first = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if first.get("type") != "ready":
            raise RuntimeError(f"server refused the stream: {first}")
        res = StreamResult(first)

        async def send():
            t0 = time.perf_counter()
            for k, i in enumerate(range(0, len(wav), step)):
                chunk = wav[i:i + step]
                if realtime:
                    await asyncio.sleep(max(0.0, t0 + i / sr - time.perf_counter()))
                data = (np.clip(chunk, -1, 1) * 32767).astype("<i2").tobytes() if fmt == "pcm16" \
                    else chunk.astype("<f4").tobytes()
                res.chunk_sent_s.append(time.perf_counter())
                res.chunk_end_sample.append(min(len(wav), i + step) * SAMPLE_RATE // sr)
                await ws.send(data)
            await ws.send(json.dumps({"type": "stop"}))

        async def recv():
            while True:
                msg = await asyncio.wait_for(ws.recv(), timeout)
                if isinstance(msg, bytes):
                    magic, idx, ts, ms, _, _ = HEADER.unpack_from(msg)
                    if magic != MAGIC:
                        raise RuntimeError(f"bad frame magic {magic!r}")
                    res.frames.append((idx, ts, msg[HEADER.size:]))
                    res.recv_s.append(time.perf_counter())
                    res.server_ms.append(ms)
                else:
                    obj = json.loads(msg)
                    if obj.get("type") == "skipped":
                        res.skipped.extend(obj["frames"])
                    elif obj.get("type") == "end":
                        res.end = obj
                        return
                    if obj.get("type") == "error":
                        res.errors.append(obj)
                        return
        await asyncio.gather(send(), recv())
    return res
