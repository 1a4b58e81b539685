"""`avatar serve` hardening (issue 12): a server only its own page can use (Origin, Host, token),
/files serves media only (no dotfiles, correct URL decoding, never a 500), silent connections
cannot hold the slots, a fast pusher or a client that never reads cannot starve a paced client,
every protocol error gets a JSON error, and a bad --port is one line.

CPU-friendly: flat 16x16 frames (slow renders are simulated with sleep, which costs no CPU).
"""
import asyncio
import json
import os
import socket
import time

import numpy as np
import pytest

websockets = pytest.importorskip("websockets")
from websockets.asyncio.client import connect  # noqa: E402

from avatar.runtime.client import stream_audio  # noqa: E402
from avatar.runtime.server import MEDIA_TYPES, AvatarServer, ServerConfig
from avatar.runtime.protocol import json_depth  # noqa: E402

from test_serve_protocol import expect_error, flat_factory, tone, wait_idle  # noqa: E402


def serve(coro_fn, cfg=None, factory=flat_factory, timeout=60):
    async def main():
        server = await AvatarServer(factory, cfg or ServerConfig()).start("127.0.0.1", 0)
        try:
            return await asyncio.wait_for(coro_fn(server, f"ws://127.0.0.1:{server.port}/ws"), timeout)
        finally:
            await server.close()
    return asyncio.run(main())


def raw_http(port: int, target: bytes, host: bytes, extra: bytes = b"") -> tuple:
    """One raw HTTP/1.1 request (any target bytes, any Host): (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + extra + b"Connection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


WS_UPGRADE = (b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              b"Sec-WebSocket-Version: 13\r\n")


async def in_thread(fn, *a):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *a)


# ----------------------------------------------------------------------------- Origin, Host, token
def test_foreign_origin_and_foreign_host_are_refused():
    cfg = ServerConfig(allow_origins=("http://Mybox.lan:9000/",))

    async def go(server, uri):
        port = server.port
        for origin in ("http://evil.example", f"http://evil.example:{port}", "null", f"https://127.0.0.1:{port}"):
            with pytest.raises(websockets.exceptions.InvalidStatus) as e:
                await connect(uri, origin=origin)
            assert e.value.response.status_code == 403
            assert json.loads(e.value.response.body)["code"] == "forbidden_origin"
        # the page's own origins, and an --allow-origin one, stream
        for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}", "http://mybox.lan:9000", None):
            async with connect(uri, origin=origin) as ws:
                await ws.send(json.dumps({"type": "ping"}))
                assert json.loads(await ws.recv()) == {"type": "pong"}
        # a page request that carries a foreign Origin
        st, body = await in_thread(raw_http, port, b"/health", f"127.0.0.1:{port}".encode(),
                                   b"Origin: http://evil.example\r\n")
        assert st == 403 and json.loads(body)["code"] == "forbidden_origin"
        # DNS rebinding: the right address, a foreign name in Host, for the page, /health and /ws
        for target, extra in ((b"/", b""), (b"/health", b""), (b"/app.js", b""), (b"/files/", b""),
                              (b"/ws", WS_UPGRADE)):
            for host in (f"evil.example:{port}".encode(), b"127.0.0.1:1", b"127.0.0.1"):
                st, body = await in_thread(raw_http, port, target, host, extra)
                assert st == 403, (target, host)
                assert json.loads(body)["code"] == "forbidden_host"
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}", "mybox.lan:9000"):
            st, body = await in_thread(raw_http, port, b"/health", host.encode())
            assert st == 200 and json.loads(body)["ok"] is True, host
        st, _ = await in_thread(raw_http, port, b"/ws", f"127.0.0.1:{port}".encode(),
                                WS_UPGRADE + b"Origin: http://evil.example\r\n")
        assert st == 403
        assert server.served == 4  # only the four accepted WebSockets reached a session
    serve(go, cfg)


def test_token_guards_the_stream_and_the_files(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"RIFF0000WAVE")
    cfg = ServerConfig(token="s3cret-T0ken", files=tmp_path)

    async def go(server, uri):
        assert server.url() == f"http://127.0.0.1:{server.port}/?token=s3cret-T0ken"
        assert server.url(kind="ws") == f"{uri}?token=s3cret-T0ken"
        for bad in (uri, uri + "?token=wrong", uri + "?token="):
            async with connect(bad) as ws:
                msg = await expect_error(ws, "unauthorized")
                assert "token" in msg
                with pytest.raises(websockets.exceptions.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10)
                assert ws.close_code == 1008
        res = await stream_audio(server.url(kind="ws"), tone(16000, 0.2), 16000)
        assert len(res.frames) == 5 and not res.errors
        host = f"127.0.0.1:{server.port}".encode()
        for target in (b"/files/", b"/files/a.wav", b"/files/a.wav?token=nope"):
            st, body = await in_thread(raw_http, server.port, target, host)
            assert st == 401 and json.loads(body)["code"] == "unauthorized", target
        st, body = await in_thread(raw_http, server.port, b"/files/a.wav?token=s3cret-T0ken", host)
        assert st == 200 and body.startswith(b"RIFF")
        st, body = await in_thread(raw_http, server.port, b"/files/?token=s3cret-T0ken", host)
        assert st == 200 and [f["name"] for f in json.loads(body)["files"]] == ["a.wav"]
        st, body = await in_thread(raw_http, server.port, b"/", host)  # the page itself is public
        assert st == 200 and b"<canvas" in body
        st, body = await in_thread(raw_http, server.port, b"/health", host)
        assert json.loads(body)["token_required"] is True
        assert server.served == 1
    serve(go, cfg)


# ----------------------------------------------------------------------------- /files
def test_files_serves_media_only_with_correct_url_decoding(tmp_path):
    d = tmp_path / "shared"
    d.mkdir()
    (d / ".env").write_text("SECRET=1")
    (d / ".hidden.wav").write_bytes(b"RIFF")
    (d / "notes.txt").write_text("private")
    (d / "my talk.wav").write_bytes(b"RIFF-space")
    (d / "café.mp3").write_bytes(b"ID3-e-acute")
    (d / "100%.ogg").write_bytes(b"OggS")
    (d / "Clip.MP4").write_bytes(b"mp4")
    (d / "sub").mkdir()
    (d / "sub" / "x.wav").write_bytes(b"RIFF")
    (tmp_path / "outside.wav").write_bytes(b"RIFF-outside")
    os.symlink(tmp_path / "outside.wav", d / "link.wav")

    async def go(server, uri):
        port, host = server.port, f"127.0.0.1:{server.port}".encode()

        def get(target: bytes):
            return raw_http(port, target, host)
        st, body = await in_thread(get, b"/files/")
        index = json.loads(body)
        assert st == 200 and index["folder"] is True
        assert [f["name"] for f in index["files"]] == ["100%.ogg", "café.mp3", "Clip.MP4", "my talk.wav"]
        for f in index["files"]:  # every listed URL fetches its file
            st, body = await in_thread(get, f["url"].encode())
            assert st == 200 and body == (d / f["name"]).read_bytes(), f
            assert f["type"] == MEDIA_TYPES[os.path.splitext(f["name"])[1].lower()]
        assert index["files"][1]["url"] == "/files/caf%C3%A9.mp3"
        st, body = await in_thread(get, b"/files/my%20talk.wav")
        assert st == 200 and body == b"RIFF-space"
        st, body = await in_thread(get, b"/files/cafe%CC%81.mp3")  # NFD spelling of the same name
        assert st == 200 and body == b"ID3-e-acute"
        for target, want in ((b"/files/.env", 404), (b"/files/%2eenv", 404), (b"/files/.hidden.wav", 404),
                             (b"/files/notes.txt", 404), (b"/files/sub/x.wav", 404), (b"/files/sub%2Fx.wav", 404),
                             (b"/files/link.wav", 404), (b"/files/..%2Foutside.wav", 404),
                             (b"/files/../outside.wav", 404), (b"/files/nothere.wav", 404), (b"/files/sub", 404),
                             (b"/files/\x00", 400), (b"/files/%00", 400), (b"/files/a%00.wav", 400),
                             (b"/files/%ff.wav", 400), (b"/files/a\\b.wav", 400), (b"/files/%0d%0a.wav", 400),
                             (b"/%00", 400), (b"*", 400), (b"/nope", 404)):
            st, body = await in_thread(get, target)
            assert st == want, (target, st, body)
            msg = json.loads(body)
            assert msg["type"] == "error" and "Traceback" not in msg["message"], target
        st, body = await in_thread(get, b"/health")
        assert st == 200  # the server survived all of that
    serve(go, ServerConfig(files=d))

    async def no_files(server, uri):
        st, body = await in_thread(raw_http, server.port, b"/files/", f"127.0.0.1:{server.port}".encode())
        assert st == 200 and json.loads(body) == {"files": [], "folder": False}
    serve(no_files)


# ----------------------------------------------------------------------------- slots and timeouts
def test_silent_clients_cannot_hold_the_slots():
    """8 sockets that connect and never send (max_clients=8): a real client is still served within
    1 s; the silent ones are closed with a start_timeout error, a started-then-silent one with idle_timeout."""
    cfg = ServerConfig(max_clients=8, start_timeout_s=1.5, idle_timeout_s=1.0)

    async def go(server, uri):
        silent = [await connect(uri) for _ in range(8)]
        await asyncio.sleep(0.2)
        assert server.active == 8
        t0 = time.perf_counter()
        res = await stream_audio(uri, tone(16000, 0.2), 16000)
        served_s = time.perf_counter() - t0
        assert len(res.frames) == 5 and not res.errors
        print(f"\nreal client beside 8 silent ones: whole 0.2 s stream served in {served_s * 1000:.0f} ms")
        assert served_s < 1.0
        # a client that starts a stream and then goes quiet
        quiet = await connect(uri)
        await quiet.send(json.dumps({"type": "start", "sample_rate": 16000}))
        assert json.loads(await quiet.recv())["type"] == "ready"
        for ws in silent:
            assert "start" in await expect_error(ws, "start_timeout")
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1008
        assert "nothing received" in await expect_error(quiet, "idle_timeout")
        await wait_idle(server)
        assert server.streams == 0
    serve(go, cfg)


def test_pings_do_not_extend_the_start_deadline():
    async def go(server, uri):
        async with connect(uri) as ws:
            t0 = time.perf_counter()
            for _ in range(5):
                await ws.send(json.dumps({"type": "ping"}))
                assert json.loads(await ws.recv())["type"] == "pong"
                await asyncio.sleep(0.1)
            await expect_error(ws, "start_timeout")
            assert time.perf_counter() - t0 < 1.5
    serve(go, ServerConfig(start_timeout_s=0.8))


# ----------------------------------------------------------------------------- fairness and pacing
def slow_factory(ms_per_frame: float):
    def factory(stereo):
        src = flat_factory(stereo)
        inner = src.renderer

        def render(idx, wins):
            time.sleep(ms_per_frame / 1000 * len(idx))  # a renderer that takes time (without using CPU)
            return inner(idx, wins)
        src.renderer = render
        return src
    return factory


def test_fast_pusher_and_non_reader_do_not_starve_a_paced_client():
    """One render worker; a client pushes 6 s of audio in 2 s chunks as fast as it can, another
    pushes and never reads its frames; a microphone-like client beside them (40 ms chunks in real
    time) still gets its first frame in < 300 ms, and the pusher is held to max_ahead_s of real time."""
    cfg = ServerConfig(workers=1, max_chunk_s=2.0, max_ahead_s=1.0)

    async def go(server, uri):
        async def pusher():
            t0 = time.perf_counter()
            res = await stream_audio(uri, tone(16000, 6.0), 16000, chunk_ms=2000)
            return res, time.perf_counter() - t0

        async def non_reader():
            ws = await connect(uri, max_queue=1)  # its frames pile up unread
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "format": "f32"}))
            for _ in range(3):
                await ws.send(tone(16000, 2.0).tobytes())
            await asyncio.sleep(4.0)
            ws.transport.abort()

        async def paced():
            await asyncio.sleep(0.5)  # join while the others are busy
            return await stream_audio(uri, tone(16000, 2.0), 16000, chunk_ms=40, realtime=True)
        (push, push_s), _, res = await asyncio.gather(pusher(), non_reader(), paced())
        lat = res.latencies_ms()
        print(f"\npaced client beside a fast pusher and a non-reader: first frame {lat[0]:.0f} ms, "
              f"p50 {np.percentile(lat, 50):.0f} p95 {np.percentile(lat, 95):.0f} max {lat.max():.0f} ms; "
              f"pusher 6 s of audio took {push_s:.2f} s")
        assert [f[0] for f in res.frames] == list(range(50)) and not res.errors
        assert lat[0] < 300, lat[:5]
        assert np.percentile(lat, 95) < 300, lat
        assert [f[0] for f in push.frames] == list(range(150)) and not push.errors
        assert push_s > 6.0 - 1.0 - 0.3  # paced to real time + max_ahead_s (the last chunk waits)
        await wait_idle(server)
    serve(go, cfg, factory=slow_factory(10.0))


def test_procedural_head_paced_client_beside_a_fast_pusher():
    """The same with the real procedural head renderer on CPU (96 px)."""
    from avatar.runtime.sources import ProceduralHeadSource
    from avatar.runtime.view import ViewConfig

    def factory(stereo):
        return ProceduralHeadSource(ViewConfig(96, 96, stereo), fps=25.0, mouth_levels=6, blink_levels=2)

    async def go(server, uri):
        await stream_audio(uri, tone(16000, 0.2), 16000)  # warm-up (first render builds caches)

        async def paced():
            await asyncio.sleep(0.3)
            return await stream_audio(uri, tone(16000, 1.5), 16000, chunk_ms=40, realtime=True)
        push, res = await asyncio.gather(stream_audio(uri, tone(16000, 4.0), 16000, chunk_ms=1000), paced())
        lat = res.latencies_ms()
        print(f"\nprocedural head 96 px, paced client beside a fast pusher: first frame {lat[0]:.0f} ms, "
              f"p50 {np.percentile(lat, 50):.0f} p95 {np.percentile(lat, 95):.0f} ms")
        assert len(push.frames) == 100 and len(res.frames) == 38 and not res.errors
        assert lat[0] < 300, lat[:5]
    serve(go, ServerConfig(workers=1), factory=factory)


# ----------------------------------------------------------------------------- protocol errors
def test_deeply_nested_json_gets_an_error_and_the_connection_survives():
    assert json_depth('{"a": "[[[[[[[[[[", "b": [1, {"c": 2}]}') == 3
    assert json_depth('"\\"[[["') == 0

    async def go(server, uri):
        async with connect(uri) as ws:
            for text in ("[" * 4000, "{\"a\":" * 600 + "1" + "}" * 600, json.dumps({"type": [[[[[[[[[["x"]]]]]]]]]]})):
                await ws.send(text)
                assert "nest" in await expect_error(ws, "bad_json")
            await ws.send(json.dumps({"type": {"nested": True}}))
            assert "string" in await expect_error(ws, "bad_message")
            await ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await ws.recv()) == {"type": "pong"}
    serve(go)


def test_a_failing_source_is_an_internal_error_message():
    def broken(stereo):
        raise RuntimeError("model exploded")

    async def go(server, uri):
        async with connect(uri) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
            assert "model exploded" in await expect_error(ws, "internal_error")
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1011
        await wait_idle(server)
        assert server.streams == 0
    serve(go, factory=broken)


# ----------------------------------------------------------------------------- the command line
@pytest.mark.parametrize("args, message", [
    (dict(port=99999), "avatar serve: error: --port must be in 0..65535, got 99999"),
    (dict(port=-1), "avatar serve: error: --port must be in 0..65535, got -1"),
    (dict(idle_timeout=0.0), "avatar serve: error: --idle-timeout must be a positive number of seconds, got 0.0"),
    (dict(allow_origin=("evil.example",)), "avatar serve: error: --allow-origin: an allowed origin must look like "
                                          "http://HOST:PORT or https://HOST, got 'evil.example'"),
    (dict(files="/nonexistent/folder"), "avatar serve: error: --files /nonexistent/folder: not a folder"),
])
def test_bad_arguments_are_one_line(args, message, capsys):
    from pathlib import Path

    from avatar.commands.serve import Serve

    if "files" in args:
        args["files"] = Path(args["files"])
    assert Serve("procedural", **args).main() == 2
    out = capsys.readouterr()
    assert out.err.strip() == message and "Traceback" not in out.err + out.out


def test_a_client_that_never_reads_is_dropped_and_frees_its_slot():
    """Large frames that the client never reads: once the buffers are full the server's sends wait;
    after idle_timeout_s it drops the client (its slot goes to the next one)."""
    from avatar.runtime.stream import Backdrop, StreamingSource
    from avatar.audio.stream import MouthEnvelope

    rng = np.random.default_rng(0)
    noise = rng.random((1, 1, 384, 384, 3), dtype=np.float32)  # incompressible: ~200 kB JPEGs

    def factory(stereo):
        def render(idx, wins):
            return np.repeat(noise, len(idx), 0), np.ones((len(idx), 1, 384, 384, 1), np.float32)
        return StreamingSource(MouthEnvelope(25.0), render, fps=25.0, width=384, height=384, views=1,
                               backdrop=Backdrop("color", (0, 0, 0)))
    cfg = ServerConfig(max_clients=1, idle_timeout_s=1.0, max_ahead_s=30.0, write_limit=1 << 16)

    async def go(server, uri):
        ws = await connect(uri, max_queue=1)
        ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "format": "f32"}))
        for _ in range(6):
            await ws.send(tone(16000, 1.0).tobytes())
        for _ in range(100):
            if server.streams == 1:
                break
            await asyncio.sleep(0.02)
        assert server.streams == 1
        t0 = time.perf_counter()
        for _ in range(200):
            if server.streams == 0:
                break
            await asyncio.sleep(0.05)
        assert server.streams == 0, "the non-reading client still holds its slot"
        print(f"\nnon-reading client dropped {time.perf_counter() - t0:.1f} s after its audio was sent")
        res = await stream_audio(uri, tone(16000, 0.2), 16000)  # the slot is free again
        assert len(res.frames) == 5 and not res.errors
        ws.transport.abort()
    serve(go, cfg, factory=factory)
