"""End to end: a Python client streams real speech (../shared/media) to `avatar serve` (procedural
head) in real time and checks frame count, order, timing, causality and that the mouth follows the
audio."""
import asyncio

import numpy as np
import pytest

pytest.importorskip("websockets")

from avatar.runtime.camera_path import Camera  # noqa: E402
from avatar.audio.stream import MouthEnvelope
from avatar.runtime.sources import ProceduralHeadSource
from avatar.runtime.view import ViewConfig, procedural_camera
from avatar.audio.timeline import num_frames  # noqa: E402
from avatar.runtime.server import AvatarServer, ServerConfig
from avatar.runtime.client import stream_audio  # noqa: E402

SIZE = 96


def mouth_box(size: int):
    """Pixel box around the procedural head's mouth in the default frontal camera."""
    from avatar.synth.head import deformed_landmarks

    cam: Camera = procedural_camera(size, size)
    lm = deformed_landmarks(1.0, 0.0).astype(np.float64)
    pts = lm[[61, 291, 13, 14, 17, 0]]
    p = (cam.viewmat[:3, :3] @ pts.T + cam.viewmat[:3, 3:]).T
    uv = (cam.K @ p.T).T
    uv = uv[:, :2] / uv[:, 2:]
    (x0, y0), (x1, y1) = np.floor(uv.min(0)).astype(int), np.ceil(uv.max(0)).astype(int)
    return slice(y0, y1 + 1), slice(x0, x1 + 1)


def test_stream_real_speech_in_real_time(media):
    import cv2

    from avatar.media.audio import load_audio

    sr = 24000  # the file's own rate: the server resamples to 16 kHz as it streams
    wav = load_audio(media / "audio" / "vctk_p240_F.mp3", sr=sr)[: int(3.0 * sr)]

    def factory(stereo):
        return ProceduralHeadSource(ViewConfig(SIZE, SIZE, stereo), fps=25.0, mouth_levels=6, blink_levels=2)

    async def main():
        server = await AvatarServer(factory, ServerConfig()).start("127.0.0.1", 0)
        try:
            return await stream_audio(f"ws://127.0.0.1:{server.port}/ws", wav, sr, chunk_ms=40,
                                      fmt="pcm16", realtime=True)
        finally:
            await server.close()
    res = asyncio.run(asyncio.wait_for(main(), 240))

    n = num_frames(int(np.ceil(len(wav) * 16000 / sr)), 25.0)
    assert n == 75
    idx = [f[0] for f in res.frames]
    assert idx == list(range(n)) and res.end["frames"] == n and not res.errors
    assert np.allclose([f[1] for f in res.frames], np.arange(n) / 25.0, atol=1e-9)
    assert abs(res.end["duration_s"] - 3.0) < 1e-6
    assert np.all(np.diff(res.recv_s) >= 0)
    lat = res.latencies_ms()
    # causality: no frame arrives before the audio it depends on was sent
    assert lat.min() > 0, lat.min()
    print(f"\nlatency ms: p50 {np.percentile(lat, 50):.0f} p95 {np.percentile(lat, 95):.0f} "
          f"max {lat.max():.0f}; server ms p50 {np.percentile(res.server_ms, 50):.0f}")
    # the mouth follows the audio: dark inside-mouth pixels vs the envelope of the same audio
    env = MouthEnvelope(25.0)
    wav16 = load_audio(media / "audio" / "vctk_p240_F.mp3")[: 3 * 16000]
    ref = np.array([r[0] for r in env.push(wav16) + env.finish()])[:n]
    ref = np.array([factory(False).expression(0, m)[0] for m in ref])  # as quantised by the source
    ys, xs = mouth_box(SIZE)
    src = factory(False)
    closed = src.backdrop.compose(*src._render_one(0, 0.0, 0.0))[0][0].astype(np.float32)
    change = []
    for _, _, jpg in res.frames:
        img = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
        assert img.shape == (SIZE, SIZE, 3)
        change.append(np.abs(img[ys, xs].astype(np.float32) - closed[ys, xs]).mean())
    change = np.array(change)
    assert ref.std() > 0.1 and change.max() > 20
    corr = np.corrcoef(change, ref)[0, 1]
    levels = np.unique(ref)
    means = np.array([change[ref == v].mean() for v in levels])
    spread = max(np.ptp(change[ref == v]) for v in levels)
    print(f"mouth change vs audio envelope: pearson {corr:.3f}; per level {np.round(means, 1).tolist()}")
    assert len(levels) >= 4 and corr > 0.85, corr
    assert spread < 3.0  # the same opening renders the same mouth (JPEG noise only)
    # more voice, wider mouth (the change saturates near full opening: small dips there are JPEG noise)
    assert np.all(np.diff(means) > -3.0) and means[-1] - means[0] > 15
