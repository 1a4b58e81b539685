"""`avatar serve` protocol and robustness: bad input gets a clear JSON error for that client only;
disconnects and many clients at once leave the server serving the others; bounded messages.

These use a fast flat-colour source (the protocol does not depend on what is rendered); the real
renders are covered by test_serve_stream.py (procedural head) and test_serve_browser.py.
"""
import asyncio
import json
import struct

import numpy as np
import pytest

websockets = pytest.importorskip("websockets")
from websockets.asyncio.client import connect  # noqa: E402

from avatar.runtime.stream import Backdrop, StreamingSource
from avatar.audio.stream import MouthEnvelope
from avatar.audio.timeline import num_frames  # noqa: E402
from avatar.runtime.protocol import HEADER, MAGIC
from avatar.runtime.server import AvatarServer, ServerConfig
from avatar.runtime.client import stream_audio  # noqa: E402


def flat_factory(stereo: bool):
    """Frames whose grey level is the mouth envelope (enough to check order and content)."""
    views = 2 if stereo else 1

    def render(idx, wins):
        B = len(idx)
        col = np.broadcast_to(wins[:, 0, 0][:, None, None, None, None], (B, views, 16, 16, 3)).astype(np.float32)
        return col, np.ones((B, views, 16, 16, 1), np.float32)
    return StreamingSource(MouthEnvelope(25.0), render, fps=25.0, width=16, height=16, views=views,
                           backdrop=Backdrop("color", (0, 0, 0)))


def run_with_server(coro_fn, cfg=None, factory=flat_factory):
    async def main():
        server = await AvatarServer(factory, cfg or ServerConfig()).start("127.0.0.1", 0)
        try:
            return await asyncio.wait_for(coro_fn(server, f"ws://127.0.0.1:{server.port}/ws"), 60)
        finally:
            await server.close()
    return asyncio.run(main())


async def expect_error(ws, code):
    msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert msg["type"] == "error" and msg["code"] == code, msg
    assert len(msg["message"]) > 10
    return msg["message"]


async def wait_idle(server):
    for _ in range(200):
        if server.active == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{server.active} sessions still open")


def tone(sr, seconds, amp=0.3):
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * 220 * t) * (t % 0.5 < 0.25)).astype(np.float32)


def test_start_validation_errors_name_the_field_and_keep_the_connection():
    async def go(server, uri):
        async with connect(uri) as ws:
            await ws.send(b"\x00\x01" * 100)
            assert "start" in await expect_error(ws, "not_started")
            await ws.send(json.dumps({"type": "start", "format": "pcm16"}))
            assert "sample_rate" in await expect_error(ws, "bad_start")
            await ws.send(json.dumps({"type": "start", "sample_rate": "48000"}))
            assert "sample_rate" in await expect_error(ws, "bad_start")
            await ws.send(json.dumps({"type": "start", "sample_rate": 100}))
            assert "8000" in await expect_error(ws, "bad_start")
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "format": "mp3"}))
            assert "format" in await expect_error(ws, "bad_start")
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "stereo": "yes"}))
            assert "stereo" in await expect_error(ws, "bad_start")
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "rate": 1}))
            assert "rate" in await expect_error(ws, "bad_start")
            await ws.send("{not json")
            await expect_error(ws, "bad_json")
            await ws.send("[1, 2]")
            await expect_error(ws, "bad_json")
            await ws.send(json.dumps({"type": "dance"}))
            assert "dance" in await expect_error(ws, "bad_message")
            await ws.send(json.dumps({"type": "stop"}))
            await expect_error(ws, "not_started")
            # after all that, the same connection still streams
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "format": "f32"}))
            ready = json.loads(await ws.recv())
            assert ready["type"] == "ready" and ready["fps"] == 25.0 and ready["header_bytes"] == HEADER.size
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
            await expect_error(ws, "already_started")
            await ws.send(np.zeros(1601, np.float32).tobytes())
            await ws.send(json.dumps({"type": "stop"}))
            frames = []
            while True:
                m = await ws.recv()
                if isinstance(m, bytes):
                    frames.append(HEADER.unpack_from(m)[1])
                else:
                    assert json.loads(m) == {"type": "end", "frames": 3, "duration_s": 1601 / 16000, "skipped": 0}
                    break
            assert frames == [0, 1, 2]  # ceil(1601 / 640) = 3 frames at 25 fps
    run_with_server(go)


def test_malformed_audio_chunks_are_rejected_with_a_reason():
    async def go(server, uri):
        async with connect(uri) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "format": "pcm16"}))
            assert json.loads(await ws.recv())["type"] == "ready"
            await ws.send(b"\x00" * 641)
            assert "641 bytes" in await expect_error(ws, "malformed_audio")
        async with connect(uri) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "format": "f32"}))
            assert json.loads(await ws.recv())["type"] == "ready"
            bad = np.zeros(320, np.float32)
            bad[7] = np.nan
            await ws.send(bad.tobytes())
            assert "NaN" in await expect_error(ws, "malformed_audio")
            await ws.send((np.ones(320, np.float32) * 3000).tobytes())
            assert "[-1, 1]" in await expect_error(ws, "malformed_audio")
            await ws.send(b"\x00" * 6)
            await expect_error(ws, "malformed_audio")
    run_with_server(go)


def test_oversized_messages_error_then_close_and_server_survives():
    cfg = ServerConfig(max_chunk_s=0.1)

    async def go(server, uri):
        async with connect(uri) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "format": "pcm16"}))
            ready = json.loads(await ws.recv())
            assert ready["max_chunk_bytes"] == 3200
            await ws.send(b"\x00" * 3202)
            msg = await expect_error(ws, "message_too_large")
            assert "3202 bytes" in msg and "3200" in msg
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1009
        async with connect(uri) as ws:  # far beyond anything valid: websockets itself refuses it
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
            await ws.recv()
            await ws.send(b"\x00" * (server.max_size + 10))
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1009
        async with connect(uri) as ws:
            await ws.send("x" * 5000)
            await expect_error(ws, "message_too_large")
        res = await stream_audio(uri, tone(16000, 0.5), 16000)  # others still served
        assert [f[0] for f in res.frames] == list(range(13))
        await wait_idle(server)
    run_with_server(go, cfg)


def test_disconnect_mid_stream_and_many_clients_at_once():
    async def go(server, uri):
        # a client that vanishes mid-stream (no close handshake)
        ws = await connect(uri)
        await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
        await ws.recv()
        await ws.send((tone(16000, 0.3) * 32767).astype("<i2").tobytes())
        ws.transport.abort()
        # many clients at once, at different rates and formats, plus a misbehaving one
        rates = [16000, 22050, 44100, 48000, 8000, 32000]
        wavs = [tone(sr, 1.0 + 0.1 * i) for i, sr in enumerate(rates)]

        async def bad():
            async with connect(uri) as b:
                await b.send(json.dumps({"type": "start", "sample_rate": 0}))
                await expect_error(b, "bad_start")
                await b.send(b"garbage")
                await expect_error(b, "not_started")
        results = await asyncio.gather(
            *[stream_audio(uri, w, sr, fmt="f32" if i % 2 else "pcm16", chunk_ms=30 + 7 * i)
              for i, (w, sr) in enumerate(zip(wavs, rates))], bad())
        for (w, sr), res in zip(zip(wavs, rates), results[:-1]):
            n16 = int(np.ceil(len(w) * 16000 / sr))
            n = num_frames(n16, 25.0)
            assert [f[0] for f in res.frames] == list(range(n)), sr
            assert np.allclose([f[1] for f in res.frames], np.arange(n) / 25.0, atol=1e-9)
            assert res.end["frames"] == n and not res.errors
            assert all(f[2][:2] == b"\xff\xd8" for f in res.frames)  # JPEG SOI
        await wait_idle(server)
        assert server.served == len(rates) + 2
    run_with_server(go)


def test_busy_server_refuses_clearly():
    """A slot is a stream (a valid 'start'), not a connection: the second 'start' is refused while the
    first stream runs, and taken once it has ended; too many connections are refused on connect."""
    async def go(server, uri):
        async with connect(uri) as a:
            await a.send(json.dumps({"type": "ping"}))
            assert json.loads(await a.recv()) == {"type": "pong"}
            async with connect(uri) as b:  # a has not started: b may stream
                await b.send(json.dumps({"type": "start", "sample_rate": 16000}))
                assert json.loads(await b.recv())["type"] == "ready"
                await a.send(json.dumps({"type": "start", "sample_rate": 16000}))
                msg = await expect_error(a, "server_busy")
                assert "max_clients=1" in msg
                with pytest.raises(websockets.exceptions.ConnectionClosed):
                    await asyncio.wait_for(a.recv(), 10)
                assert a.close_code == 1013
                async with connect(uri) as c, connect(uri) as d:  # max_connections=2: b, c; d refused
                    assert "max_connections=2" in await expect_error(d, "server_busy")
                    await b.send(json.dumps({"type": "stop"}))
                    assert json.loads(await b.recv())["type"] == "end"  # slot freed
                    await c.send(json.dumps({"type": "start", "sample_rate": 16000}))
                    assert json.loads(await c.recv())["type"] == "ready"
    run_with_server(go, ServerConfig(max_clients=1, max_connections=2))


def test_frames_follow_the_audio_and_stereo_is_side_by_side():
    import cv2

    async def go(server, uri):
        wav = np.concatenate([np.zeros(8000, np.float32), tone(16000, 0.5, amp=0.5) * 0 + 0.5,
                              np.zeros(8000, np.float32)])
        res = await stream_audio(uri, wav, 16000, fmt="f32", stereo=True)
        assert res.ready["views"] == 2 and res.ready["width"] == 32
        grey = []
        for _, _, jpg in res.frames:
            img = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
            assert img.shape == (16, 32, 3)
            grey.append(img.mean())
        grey = np.array(grey)
        assert grey[:10].max() < 10 and grey[14:24].min() > 200  # silence dark, loud bright
    run_with_server(go)


def test_http_page_files_and_health(tmp_path):
    import urllib.request

    (tmp_path / "a.wav").write_bytes(b"RIFF0000WAVE")
    (tmp_path.parent / "secret.txt").write_text("no")

    async def go(server, uri):
        base = f"http://127.0.0.1:{server.port}"

        def get(path):
            try:
                with urllib.request.urlopen(base + path, timeout=10) as r:
                    return r.status, r.headers.get("Content-Type"), r.read()
            except urllib.error.HTTPError as e:
                return e.code, None, b""
        loop = asyncio.get_running_loop()
        st, ct, body = await loop.run_in_executor(None, get, "/")
        assert st == 200 and "html" in ct and b"<canvas" in body and b"app.js" in body
        assert b"http://" not in body and b"https://" not in body  # no external CDN
        st, ct, body = await loop.run_in_executor(None, get, "/app.js")
        assert st == 200 and b"AVF1" in body and b"https://" not in body
        st, _, _ = await loop.run_in_executor(None, get, "/worklet.js")
        assert st == 200
        st, _, body = await loop.run_in_executor(None, get, "/files/a.wav")
        assert st == 200 and body.startswith(b"RIFF")
        for p in ("/files/../secret.txt", "/files/%2e%2e/secret.txt", "/nope", "/files/%2e%2e%2fsecret.txt"):
            st, _, _ = await loop.run_in_executor(None, get, p)
            assert st == 404, p
        st, _, body = await loop.run_in_executor(None, get, "/health")
        assert st == 200 and json.loads(body)["ok"] is True
    run_with_server(go, ServerConfig(files=tmp_path))


def test_frame_header_layout():
    h = HEADER.pack(MAGIC, 7, 0.28, 12.5, 2, 0)
    assert len(h) == 24 and h[:4] == b"AVF1"
    assert struct.unpack("<I", h[4:8])[0] == 7 and struct.unpack("<d", h[8:16])[0] == 0.28


def test_realtime_mode_skips_frames_when_rendering_lags_and_keeps_latency_bounded():
    import time as _time

    def slow_factory(stereo):
        src = flat_factory(stereo)
        inner = src.renderer

        def render(idx, wins):
            _time.sleep(0.12)  # a renderer slower than real time (0.12 s per call, 40 ms frames)
            return inner(idx, wins)
        src.renderer = render
        return src

    async def go(server, uri):
        wav = tone(16000, 2.0)
        res = await stream_audio(uri, wav, 16000, chunk_ms=40, realtime=True, live=True)
        n = num_frames(len(wav), 25.0)
        got = [f[0] for f in res.frames]
        assert res.ready["realtime"] is True and not res.errors
        assert len(res.skipped) > 0 and res.end["skipped"] == len(res.skipped)
        assert sorted(got + res.skipped) == list(range(n))  # each frame either sent or skipped
        assert got == sorted(got) and got[-1] == n - 1
        lat = res.latencies_ms()
        assert np.percentile(lat, 95) < 800, lat  # bounded, although rendering is 1.5x too slow
        # without realtime mode every frame comes, later and later
        res2 = await stream_audio(uri, wav, 16000, chunk_ms=40, realtime=True, live=False)
        assert [f[0] for f in res2.frames] == list(range(n)) and not res2.skipped
        assert res2.latencies_ms().max() > lat.max()
    run_with_server(go, factory=slow_factory)


def test_serve_command_starts_on_localhost_and_serves_the_page():
    """`avatar serve procedural --port 0 --token`: the Serve command itself (subprocess), on 127.0.0.1,
    printing the page's URL with its per-run token."""
    import re
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", "from avatar.commands.serve import Serve; "
                             "Serve('procedural', port=0, width=64, height=64, token=True).main()"],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = ""
        for _ in range(50):
            line = proc.stdout.readline()
            if "http://" in line:
                break
        m = re.search(r"http://127\.0\.0\.1:(\d+)/\?token=([\w-]{16,})  \(stream: ws://127\.0\.0\.1:\d+/ws\?token=", line)
        assert m, line
        port, token = int(m.group(1)), m.group(2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
            assert json.loads(r.read())["ok"] is True
        res = asyncio.run(stream_audio(f"ws://127.0.0.1:{port}/ws?token={token}", tone(16000, 0.4), 16000))
        assert [f[0] for f in res.frames] == list(range(10))
    finally:
        proc.terminate()
        proc.wait(10)
