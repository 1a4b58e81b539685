"""Headless Chromium loads the `avatar serve` page, plays a real speech file through it (the page
streams the decoded audio to the server and draws the frames that come back) and the screenshot
shows a face. Driven over the Chrome DevTools Protocol with the `websockets` package (no selenium).
Skips with a reason when Debian's chromium is absent (scripts/install-test-system-deps.sh installs it).
"""
import asyncio
import base64
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("websockets")

from avatar.runtime.sources import ProceduralHeadSource
from avatar.runtime.view import ViewConfig  # noqa: E402
from avatar.runtime.server import AvatarServer, ServerConfig  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
SIZE = 160


class CDP:
    """Minimal Chrome DevTools Protocol client over one target's WebSocket."""

    def __init__(self, ws):
        self.ws, self.n = ws, 0

    async def call(self, method, **params):
        self.n += 1
        mid = self.n
        await self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), 60))
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"CDP {method}: {msg['error']}")
                return msg["result"]

    async def eval(self, expr):
        r = await self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page error: {r['exceptionDetails']}")
        return r["result"].get("value")


def launch(tmp: Path, extra=()) -> tuple:
    profile = tmp / "profile"
    proc = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-extensions", "--no-first-run",
         "--no-default-browser-check", "--disable-default-apps", "--metrics-recording-only",
         "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={profile}",
         "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1", "--window-size=900,700",
         *extra, "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = profile / "DevToolsActivePort"
    for _ in range(300):
        if port_file.is_file() and port_file.read_text().strip():
            return proc, int(port_file.read_text().split()[0])
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"chromium did not start (exit code {proc.poll()})")


def looks_like_a_face(rgb: np.ndarray) -> dict:
    """Pixel statistics of the procedural head on its white backdrop: a skin-coloured blob in the
    middle, dark hair above it, white corners, eyes/mouth structure (not a flat blob)."""
    img = rgb.astype(np.float32)
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    H, W = r.shape
    skin = (r > 95) & (g > 40) & (b > 20) & (r > g + 15) & (r > b + 15) & (r - b < 170)
    c = skin[H // 4: 3 * H // 4, W // 4: 3 * W // 4]
    top = (img[: H // 4, W // 3: 2 * W // 3].sum(-1) < 250).mean()  # hair
    corners = np.concatenate([img[:8, :8].reshape(-1, 3), img[:8, -8:].reshape(-1, 3)])
    face = img[H // 4: 3 * H // 4, W // 4: 3 * W // 4]
    return {"skin_centre": float(c.mean()), "hair_top": float(top),
            "corner_white": float((corners.min(-1) > 230).mean()), "face_std": float(face.std())}


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian packages chromium and "
                                             "chromium-driver; scripts/install-test-system-deps.sh)")
def test_browser_plays_a_file_and_shows_a_face(media, tmp_path):
    from websockets.asyncio.client import connect

    def factory(stereo):
        return ProceduralHeadSource(ViewConfig(SIZE, SIZE, stereo), fps=25.0, mouth_levels=6, blink_levels=2)

    async def main():
        server = await AvatarServer(factory, ServerConfig(files=media / "audio")).start("127.0.0.1", 0)
        proc, port = launch(tmp_path)
        try:
            loop = asyncio.get_running_loop()
            targets = await loop.run_in_executor(None, lambda: json.load(
                urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10)))
            page = next(t for t in targets if t["type"] == "page")
            async with connect(page["webSocketDebuggerUrl"], max_size=64 << 20) as ws:
                cdp = CDP(ws)
                await cdp.call("Page.enable")
                # idle: the page explains itself and lists the shared files (media only)
                await cdp.call("Page.navigate", url=f"http://127.0.0.1:{server.port}/")
                idle = None
                for _ in range(100):
                    await asyncio.sleep(0.1)
                    try:
                        idle = json.loads(await cdp.eval(
                            "JSON.stringify({files: (window.avatarState || {}).files, canvas: "
                            "document.getElementById('view').hidden, hint: document.getElementById('idle').innerText, "
                            "buttons: [...document.querySelectorAll('#files button')].map((b) => b.textContent)})"))
                    except RuntimeError:
                        continue
                    if idle["files"] is not None:
                        break
                # the documented way to play a shared file: /?play=NAME
                url = f"http://127.0.0.1:{server.port}/?play=vctk_p240_F.mp3&delay=0.2&realtime=0"
                await cdp.call("Page.navigate", url=url)
                state = None
                for _ in range(600):  # 5 s of audio in real time, plus start-up
                    await asyncio.sleep(0.2)
                    try:
                        state = json.loads(await cdp.eval("JSON.stringify(window.avatarState || null)") or "null")
                    except RuntimeError:
                        continue
                    if state and (state["ended"] or state["errors"]):
                        break
                await asyncio.sleep(0.5)  # let the last frames be drawn
                state = json.loads(await cdp.eval("JSON.stringify(window.avatarState)"))
                rect = await cdp.eval("(() => { const r = document.getElementById('view')"
                                      ".getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })()")
                shot = await cdp.call("Page.captureScreenshot", format="png")
            return state, rect, base64.b64decode(shot["data"]), server.served, idle
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            await server.close()

    state, rect, png, served, idle = asyncio.run(asyncio.wait_for(main(), 240))
    import cv2

    assert idle["canvas"] is True and "Microphone" in idle["hint"] and "Play a file" in idle["hint"], idle
    assert "/?play=NAME" in idle["hint"]
    shared = sorted(p.name for p in (media / "audio").iterdir()
                    if p.suffix.lower() in (".mp3", ".ogg", ".flac", ".wav") and not p.name.startswith("."))
    assert sorted(idle["files"]) == shared and "vctk_p240_F.mp3" in shared  # no .txt transcripts
    assert len(idle["buttons"]) == len(shared)

    assert not state["errors"], state["errors"]
    assert state["ended"] and served == 1
    n = state["endInfo"]["frames"]
    from avatar.media.audio import load_audio

    seconds = len(load_audio(media / "audio" / "vctk_p240_F.mp3")) / 16000
    assert abs(state["endInfo"]["duration_s"] - seconds) < 0.05  # the whole file went through the page
    assert n == state["frames"] + state["skipped"] and state["outOfOrder"] == 0 and state["lastIndex"] == n - 1
    assert state["skipped"] == 0  # realtime=0: every frame is rendered and sent
    assert state["drawn"] > n // 3  # frames were shown while playing (rAF in a headless tab)
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    (tmp_path / "screenshot.png").write_bytes(png)
    x, y, w, h = (int(round(v)) for v in rect)
    assert (w, h) == (SIZE, SIZE)
    canvas = img[y: y + h, x: x + w]
    stats = looks_like_a_face(canvas)
    print("\npage:", {k: state[k] for k in ("frames", "skipped", "drawn", "outOfOrder")},
          "latency p50 ms", np.percentile(state["latencyMs"], 50) if state["latencyMs"] else None, stats)
    assert stats["skin_centre"] > 0.35 and stats["hair_top"] > 0.2, stats
    assert stats["corner_white"] > 0.9 and stats["face_std"] > 20, stats
    # the page outside the canvas is the dark page background, not a face
    assert looks_like_a_face(img[-h:, -w:])["skin_centre"] < 0.05


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian packages chromium and "
                                             "chromium-driver; scripts/install-test-system-deps.sh)")
def test_browser_microphone_path_streams_live(media, tmp_path):
    """The microphone button's path (getUserMedia -> worklet -> realtime stream), with Chromium's
    fake capture device playing a speech file; Stop ends the stream cleanly."""
    from websockets.asyncio.client import connect

    from avatar.media.audio import load_audio, save_wav

    wav = load_audio(media / "audio" / "vctk_p240_F.mp3")
    save_wav(tmp_path / "mic.wav", wav, 16000)

    def factory(stereo):
        return ProceduralHeadSource(ViewConfig(96, 96, stereo), fps=25.0, mouth_levels=6, blink_levels=2)

    async def main():
        server = await AvatarServer(factory, ServerConfig()).start("127.0.0.1", 0)
        proc, port = launch(tmp_path, ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                                       f"--use-file-for-fake-audio-capture={tmp_path / 'mic.wav'}"])
        try:
            loop = asyncio.get_running_loop()
            targets = await loop.run_in_executor(None, lambda: json.load(
                urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10)))
            page = next(t for t in targets if t["type"] == "page")
            async with connect(page["webSocketDebuggerUrl"], max_size=64 << 20) as ws:
                cdp = CDP(ws)
                await cdp.call("Page.navigate", url=f"http://127.0.0.1:{server.port}/?autostart=1&stereo=1")
                state = None
                for _ in range(300):
                    await asyncio.sleep(0.2)
                    try:
                        state = json.loads(await cdp.eval("JSON.stringify(window.avatarState || null)") or "null")
                    except RuntimeError:
                        continue
                    if state and (state["errors"] or state["frames"] >= 50):
                        break
                await cdp.eval("document.getElementById('stop').click()")
                for _ in range(100):
                    await asyncio.sleep(0.1)
                    state = json.loads(await cdp.eval("JSON.stringify(window.avatarState)"))
                    if state["ended"] or state["errors"]:
                        break
            return state
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            await server.close()

    state = asyncio.run(asyncio.wait_for(main(), 180))
    assert not state["errors"], state["errors"]
    assert state["ended"] and state["ready"]["realtime"] is True and state["ready"]["views"] == 2
    assert state["ready"]["width"] == 192  # stereo side by side
    n = state["endInfo"]["frames"]
    assert n >= 50 and state["frames"] + state["skipped"] == n and state["outOfOrder"] == 0
    assert abs(state["endInfo"]["duration_s"] - n / 25.0) < 0.04 + 1e-6  # the stream covers its audio
    print("\nmic:", {k: state[k] for k in ("frames", "skipped", "drawn")}, "latency p50 ms",
          np.percentile(state["latencyMs"], 50) if state["latencyMs"] else None)
