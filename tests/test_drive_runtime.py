"""The driving runtime's pieces: streamed features equal offline ones, streaming resampler, frame
scheduling, blinks, camera paths (validation, loops without jumps) and stereo geometry."""
import json
import math

import numpy as np
import pytest

from avatar.runtime import camera_path as cp
from avatar.runtime.stream import Backdrop, StreamingSource
from avatar.runtime.blink import BlinkSchedule
from avatar.audio.stream import MouthEnvelope, StreamingMelFeatures, StreamResampler
from avatar.audio.timeline import num_frames
from avatar.runtime.view import side_by_side, stereo_viewmats


def speechlike(sr=16000, seconds=2.3, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    env = (np.sin(2 * np.pi * 3.3 * t) > 0.2) * (0.2 + 0.3 * rng.random())
    return (env * (np.sin(2 * np.pi * 190 * t) + 0.3 * rng.standard_normal(len(t)))).astype(np.float32)


def chunks(x, sizes):
    i, k = 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        yield x[i:i + n]
        i, k = i + n, k + 1


@pytest.mark.parametrize("fps", [25.0, 30.0, 29.97])
def test_streamed_mel_features_equal_offline(fps):
    from avatar.audio.features import frame_features, num_frames_for

    wav = speechlike(seconds=1.37)
    F = num_frames_for(len(wav), fps)
    assert F == num_frames(len(wav), fps)
    ref = frame_features(wav, fps, F).numpy()
    for sizes in ([160] if fps == 25.0 else [1, 999, 37, 4000], [len(wav)]):
        s = StreamingMelFeatures(fps)
        rows = []
        for c in chunks(wav, sizes):
            rows += s.push(c)
        rows += s.finish()
        got = np.stack(rows)
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=2e-6, rtol=0)
        assert len(s._buf) < 2000 and len(s._mels) < 10  # bounded state


def test_stream_resampler_matches_a_batch_resampler_and_is_chunk_invariant():
    from scipy.signal import resample_poly

    for sr in (8000, 22050, 44100, 48000):
        x = speechlike(sr, 1.0, seed=sr)
        outs = []
        for sizes in ([len(x)], [1, 77, 1000, 3]):
            r = StreamResampler(sr)
            y = np.concatenate([r.push(c) for c in chunks(x, sizes)] + [r.flush()])
            outs.append(y)
        assert len(outs[0]) == math.ceil(len(x) * 16000 / sr)
        np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)
        ref = resample_poly(x.astype(np.float64), 16000, sr)
        core = slice(200, -200)
        err = np.abs(outs[0][core] - ref[core]).max() / np.abs(ref).max()
        assert err < 0.02, (sr, err)
    r = StreamResampler(16000)
    assert np.array_equal(r.push(np.ones(5, np.float32)), np.ones(5, np.float32))
    with pytest.raises(ValueError, match="sample_rate"):
        StreamResampler(100)


def test_streaming_source_emits_each_frame_once_in_order_with_lookahead():
    seen = []

    def render(idx, wins):
        seen.append((list(idx), wins[:, :, 0].copy()))
        B = len(idx)
        return np.zeros((B, 1, 4, 4, 3), np.float32), np.zeros((B, 1, 4, 4, 1), np.float32)

    env = MouthEnvelope(25.0)
    src = StreamingSource(env, render, fps=25.0, width=4, height=4, views=1, window=2, lookahead=1,
                          backdrop=Backdrop("color", (0, 0, 0)))
    wav = speechlike(seconds=1.01)
    out = []
    out += src.push_audio(wav[:640 * 3])  # rows 0..2 exist; frame t needs row t+1 -> frames 0, 1
    assert [f.index for f in out] == [0, 1]
    out += src.push_audio(np.zeros(0, np.float32))
    out += src.push_audio(wav[640 * 3:])
    out += src.flush()
    n = num_frames(len(wav), 25.0)
    assert n == 26 and [f.index for f in out] == list(range(n))
    assert np.allclose([f.timestamp_s for f in out], np.arange(n) / 25.0)
    # windows are t-2..t+2, clamped to the first/last row
    rows = np.array([r[0] for r in MouthEnvelope(25.0).push(wav)] + [0.0])[:n]
    ref_env = MouthEnvelope(25.0)
    rows = np.array([r[0] for r in ref_env.push(wav) + ref_env.finish()])
    allw = np.concatenate([w for _, w in seen])
    for t in range(n):
        idx = np.clip(np.arange(t - 2, t + 3), 0, n - 1)
        if t + 2 <= n - 1 or True:
            np.testing.assert_allclose(allw[t][: 2 + 1 + 1], rows[idx][: 4], atol=1e-7)
    with pytest.raises(ValueError, match="after flush"):
        src.push_audio(wav[:10])
    src.reset()
    assert [f.index for f in src.push_audio(wav[:640 * 2])] == [0]
    with pytest.raises(ValueError, match="NaN"):
        src.push_audio(np.array([np.nan], np.float32))
    with pytest.raises(ValueError, match="mono"):
        src.push_audio(np.zeros((2, 10), np.float32))


def test_envelope_is_chunking_invariant_and_follows_the_level():
    wav = speechlike(seconds=3.0)
    a = MouthEnvelope(25.0)
    ra = np.array([r[0] for r in a.push(wav) + a.finish()])
    b = MouthEnvelope(25.0)
    rb = []
    for c in chunks(wav, [333, 1]):
        rb += b.push(c)
    rb = np.array([r[0] for r in rb + b.finish()])
    np.testing.assert_array_equal(ra, rb)
    silent = MouthEnvelope(25.0)
    assert max(r[0] for r in silent.push(np.zeros(16000, np.float32))) == 0.0
    level = np.array([np.sqrt(np.mean(wav[max(0, i * 640 - 320):(i + 1) * 640] ** 2)) for i in range(len(ra))])
    assert np.corrcoef(ra, level)[0, 1] > 0.7 and ra.max() > 0.9 and ra.min() < 0.2


def test_blinks_are_deterministic_brief_and_spaced():
    b1, b2 = BlinkSchedule(25.0), BlinkSchedule(25.0)
    v = np.array([b1(t) for t in range(25 * 30)])
    assert np.array_equal(v, [b2(t) for t in range(25 * 30)])
    closed = v > 0.5
    starts = np.flatnonzero(np.diff(closed.astype(int)) == 1)
    assert 5 <= len(starts) <= 13  # every 2.5-5.5 s over 30 s
    assert np.diff(starts).min() >= 2.4 * 25
    assert closed.mean() < 0.05
    assert b1(10) == BlinkSchedule(25.0)(10)  # random access agrees with sequential


def test_camera_path_file_validation(tmp_path):
    good = {"version": 1, "width": 64, "height": 48, "fov_y_deg": 30, "loop": "pingpong",
            "keyframes": [{"time": 0.0, "position": [0, 0, -0.6]},
                          {"time": 2.0, "viewmat": np.eye(4).tolist()[:2] + [[0, 0, 1, 0.6], [0, 0, 0, 1]]}]}
    p = tmp_path / "path.json"
    p.write_text(json.dumps(good))
    src = cp.load_camera_path(p, fps=25.0)
    c0, c50, c25 = src.camera(0), src.camera(50), src.camera(25)
    assert (c0.width, c0.height) == (64, 48)
    np.testing.assert_allclose(c0.viewmat, cp.look_at([0, 0, -0.6]), atol=1e-6)
    np.testing.assert_allclose(c50.viewmat[:3, 3], [0, 0, 0.6], atol=1e-6)
    np.testing.assert_allclose(src.camera(100).viewmat, c0.viewmat, atol=1e-6)  # pingpong back
    assert np.isfinite(c25.viewmat).all()
    bad = [
        ({**good, "keyframes": []}, "keyframes"),
        ({**good, "width": 0}, "width"),
        ({**good, "loop": "bounce"}, "loop"),
        ({**good, "zoom": 2}, "zoom"),
        ({**good, "keyframes": [{"time": 1.0, "position": [0, 0, -1]}, {"time": 0.5, "position": [0, 0, -1]}]},
         r"keyframes\[1\].*time"),
        ({**good, "keyframes": [{"time": 0.0, "position": [0, 0]}]}, r"keyframes\[0\]\.position"),
        ({**good, "keyframes": [{"time": 0.0, "viewmat": (2 * np.eye(4)).tolist()}]}, "rigid"),
        ({**good, "keyframes": [{"time": 0.0}]}, "viewmat"),
        ({**good, "keyframes": [{"time": "0", "position": [0, 0, -1]}]}, "time"),
    ]
    for data, msg in bad:
        p.write_text(json.dumps(data))
        with pytest.raises(cp.CameraPathError, match=msg) as e:
            cp.load_camera_path(p, 25.0)
        assert str(p) in str(e.value)
    p.write_text("{nope")
    with pytest.raises(cp.CameraPathError, match="not valid JSON"):
        cp.load_camera_path(p, 25.0)
    with pytest.raises(cp.CameraPathError, match="does not exist"):
        cp.load_camera_path(tmp_path / "missing.json", 25.0)


def _centres(Vs):
    return np.stack([-V[:3, :3].T @ V[:3, 3] for V in Vs])


def test_clip_pose_loops_without_a_jump():
    F = 40
    ang = np.linspace(0, 0.5, F)
    Vs = np.stack([cp.look_at([0.3 * np.sin(a), 0.02 * a, -0.6 * np.cos(a)]) for a in ang])
    K = np.array([[100, 0, 32], [0, 100, 32], [0, 0, 1]])
    step = np.abs(np.diff(_centres(Vs), axis=0)).max()
    for mode in ("pingpong", "crossfade"):
        src = cp.ClipPose(Vs, K, 64, 64, mode=mode, crossfade=8)
        seq = np.stack([src.camera(t).viewmat for t in range(3 * F)])
        jumps = np.abs(np.diff(_centres(seq), axis=0)).max()
        # pingpong: never more than one clip step; crossfade: the end-to-start gap spread over 8 frames
        c = _centres(Vs)
        bound = step if mode == "pingpong" else step + np.abs(c[F - 8:] - c[:8]).max() / 8
        assert jumps <= 1.01 * bound + 1e-6, (mode, jumps, bound)
        for V in seq:  # still rigid
            np.testing.assert_allclose(V[:3, :3] @ V[:3, :3].T, np.eye(3), atol=1e-5)
    with pytest.raises(cp.CameraPathError, match="crossfade"):
        cp.ClipPose(Vs, K, 64, 64, mode="crossfade", crossfade=30)
    assert [cp.loop_index(i, 4, "pingpong") for i in range(8)] == [0, 1, 2, 3, 2, 1, 0, 1]


def test_stereo_pair_is_ipd_apart_and_converges_on_the_head():
    V = cp.look_at([0.1, -0.05, -0.6])
    K = np.array([[200, 0, 64], [0, 200, 64], [0, 0, 1.0]])
    eyes = stereo_viewmats(V, ipd=0.063)
    c = _centres(eyes)
    assert abs(np.linalg.norm(c[0] - c[1]) - 0.063) < 1e-6
    mono_c = -V[:3, :3].T @ V[:3, 3]
    np.testing.assert_allclose(c.mean(0), mono_c, atol=1e-6)
    # left eye is on the camera's left (-x of the mono camera)
    assert (V[:3, :3] @ (c[0] - mono_c))[0] < 0
    # the head centre projects to the same pixel (zero disparity) in both eyes, near the mono one
    fwd = V[2, :3]
    target = mono_c + np.dot(-mono_c, fwd) * fwd
    px = []
    for E in eyes.astype(np.float64):
        p = E[:3, :3] @ target + E[:3, 3]
        px.append((K @ p)[:2] / p[2])
    np.testing.assert_allclose(px[0], px[1], atol=1e-3)
    np.testing.assert_allclose(px[0], [64, 64], atol=1e-3)
    par = stereo_viewmats(V, 0.063, converge=False)
    np.testing.assert_allclose(par[0][:3, :3], V[:3, :3], atol=1e-6)
    with pytest.raises(ValueError, match="ipd"):
        stereo_viewmats(V, ipd=-1)
    sbs = side_by_side(np.stack([np.zeros((4, 5, 3)), np.ones((4, 5, 3))]))
    assert sbs.shape == (4, 10, 3) and sbs[:, :5].max() == 0 and sbs[:, 5:].min() == 1
