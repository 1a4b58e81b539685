"""avatar.eval metrics on synthetic cases with known answers (no media, no detector)."""
import math

import numpy as np
import pytest

from avatar.eval import image, landmarks as L, sync


def _frames(T=2, H=48, W=40, seed=0):
    return (np.random.default_rng(seed).random((T, H, W, 3)) * 255).astype(np.uint8)


def _face(T=1, scale=1500.0, centre=(128.0, 128.0)):
    from avatar.data.face_model import canonical

    c = canonical()[:, :2] * scale + np.asarray(centre)
    return np.repeat(c[None], T, 0).astype(np.float64)  # [T, 478, 2]


# -- image ----------------------------------------------------------------------------------------
def test_psnr_identical_is_capped_or_inf():
    a = _frames()
    assert image.psnr(a, a) == image.PSNR_CAP
    assert image.psnr(a, a, cap=False) == math.inf


def test_psnr_known_offset():
    a = np.full((1, 8, 8, 3), 0.5, np.float32)
    b = a + 0.1  # MSE = 0.01 -> 20 dB
    assert image.psnr(a, b) == pytest.approx(20.0, abs=1e-4)
    m = np.zeros((8, 8), bool)
    m[:4] = True
    c = a.copy()
    c[0, 4:] += 0.5  # error only outside the mask
    assert image.psnr(a, c, mask=m) == image.PSNR_CAP


def test_ssim_identical_is_one_and_matches_3dgs_conv2d():
    import torch
    import torch.nn.functional as F

    a = _frames(1, 40, 36, 1)[0]
    noise = np.random.default_rng(2).integers(-40, 40, a.shape)
    b = np.clip(a.astype(int) + noise, 0, 255).astype(np.uint8)
    assert image.ssim(a, a) == 1.0
    # the 3DGS formulation: 2D Gaussian window by depthwise conv2d, padding 5 (zeros), float32
    g = torch.tensor(image._gauss_1d(), dtype=torch.float32)
    w = (g[:, None] * g[None]).expand(3, 1, 11, 11).contiguous()
    x = torch.from_numpy(a / 255.0).float().permute(2, 0, 1)[None]
    y = torch.from_numpy(b / 255.0).float().permute(2, 0, 1)[None]
    blur = lambda t: F.conv2d(t, w, padding=5, groups=3)  # noqa: E731
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    ref = ((2 * mx * my + 1e-4) * (2 * sxy + 9e-4)) / ((mx ** 2 + my ** 2 + 1e-4) * (sxx + syy + 9e-4))
    ours = image.ssim_map(a, b)
    np.testing.assert_allclose(ours, ref[0].mean(0).numpy(), atol=2e-5)
    assert 0.2 < image.ssim(a, b) < 0.99


def test_image_metrics_reject_bad_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        image.psnr(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))
    with pytest.raises(ValueError, match="uint8 or float"):
        image.psnr(np.zeros((4, 4, 3), np.int32), np.zeros((4, 4, 3), np.int32))


# -- landmarks ------------------------------------------------------------------------------------
def test_mouth_mapping_is_captures_ibug68():
    from capture.landmarks import IBUG68_TO_MP

    np.testing.assert_array_equal(L.MOUTH68_MP, IBUG68_TO_MP[48:68])


def test_lmd_identical_zero_translation_and_known_displacement():
    gt = _face(3)
    d = L.lmd(gt, gt)
    assert d["lmd"] == 0.0 and d["lmd_iod"] == 0.0 and d["frames"] == 3
    # a frame shifted by k px: the field's mean-centred LMD ignores it, the uncentred one is k
    k = 3.0
    d = L.lmd(gt, gt + [k, 0.0])
    assert d["lmd"] == pytest.approx(0.0, abs=1e-9)
    assert d["lmd_uncentred"] == pytest.approx(k)
    # every mouth point moved by k px, half left and half right (mean unchanged): LMD = k
    pred = gt.copy()
    sign = np.where(np.arange(20) % 2 == 0, 1.0, -1.0)
    pred[:, L.MOUTH68_MP, 0] += k * sign
    d = L.lmd(gt, pred)
    assert d["lmd"] == pytest.approx(k)
    assert d["lmd_iod"] == pytest.approx(k / L.inter_ocular(gt)[0])


def test_lmd_skips_frames_without_a_face():
    gt = _face(4)
    pred = gt.copy()
    pred[1] = np.nan
    d = L.lmd(gt, pred)
    assert d["frames"] == 3 and d["lmd"] == 0.0


def _opening_series(gaps):
    lm = _face(len(gaps))
    lm[:, 14, 1] = lm[:, 13, 1] + np.asarray(gaps)  # lower inner lip below the upper one
    return lm


def test_mouth_opening_and_scaled_amplitude():
    gaps = 10 + 8 * np.sin(np.linspace(0, 6, 40))
    gt, pred = _opening_series(gaps), _opening_series(2 * gaps)
    iod = L.inter_ocular(gt)[0]
    np.testing.assert_allclose(L.mouth_opening(gt), gaps / iod)
    s = L.opening_stats(L.mouth_opening(gt), L.mouth_opening(pred))
    assert s["mouth_amplitude_ratio"] == pytest.approx(2.0)
    assert s["mouth_open_corr"] == pytest.approx(1.0)
    assert s["mouth_open_mae"] == pytest.approx(np.mean(gaps) / iod)
    same = L.opening_stats(L.mouth_opening(gt), L.mouth_opening(gt))
    assert same["mouth_open_corr"] == pytest.approx(1.0) and same["mouth_open_mae"] == 0.0


def test_frozen_mouth_scores_zero():
    g = np.sin(np.linspace(0, 6, 30))
    s = L.opening_stats(g, np.full(30, 0.3))
    assert s["mouth_open_corr"] == 0.0 and s["mouth_amplitude_ratio"] == pytest.approx(0.0, abs=1e-12)
    assert L.pearson(np.arange(5.0), np.ones(5)) is None  # constant reference: undefined


def test_head_angles_recover_a_known_yaw_and_jitter():
    from avatar.data.face_model import canonical

    X = canonical().astype(np.float64)
    angles = np.array([0.0, 5.0, 10.0, 15.0])
    lms = []
    for a in np.radians(angles):
        R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])  # yaw about y
        lms.append((X @ R.T)[:, :2] * 1500 + 200)
    est = L.head_angles(np.stack(lms))
    np.testing.assert_allclose(est[:, 0], angles, atol=1e-6)
    np.testing.assert_allclose(est[:, 1:], 0.0, atol=1e-6)
    assert L.jitter(est) == pytest.approx(0.0, abs=1e-6)  # a constant-speed turn does not jitter
    wobble = np.zeros((6, 3))
    wobble[::2, 0] = 1.0  # +1, 0, +1, 0 ... degrees: second difference 2 deg/frame^2 each frame
    assert L.jitter(wobble) == pytest.approx(2.0)


def test_blink_rate_counts_eye_closures():
    lm = _face(50)
    for t in (10, 11, 30):  # two blinks (frames 10-11 and 30)
        for eye in ((385, 380), (387, 373), (160, 144), (158, 153)):
            lm[t, eye[0]] = lm[t, eye[1]]  # lids together: EAR -> 0
    r = L.blink_rate(lm, fps=25.0)
    assert r["blinks"] == 2
    assert r["blinks_per_min"] == pytest.approx(2 / (50 / 25 / 60))


def test_detect_sequence_picks_largest_face_and_marks_misses():
    small, big = _face(1, 500)[0], _face(1, 1500)[0]

    def det(frame, i):
        return [] if i == 1 else [small, big]

    lm = L.detect_sequence(_frames(3), det)
    assert lm.shape == (3, 478, 2)
    np.testing.assert_allclose(lm[0], big, rtol=1e-6)
    assert np.isnan(lm[1]).all() and not L.valid_frames(lm)[1]


# -- audio sync -----------------------------------------------------------------------------------
def _bursts(T=100, fps=25.0, seed=0):
    """Speech-like audio: noise bursts with a random loudness per frame; returns (wav, level dB [T])."""
    rng = np.random.default_rng(seed)
    spf = 640
    amp = np.repeat(rng.choice([0.0, 0.02, 0.1, 0.3], T), spf)
    wav = (rng.standard_normal(T * spf) * amp).astype(np.float32)
    return wav


def test_envelope_correlation_finds_the_lag():
    wav = _bursts()
    env = sync.speech_envelope(wav, 25.0, 100)
    opening = np.roll(env, 2)  # the mouth follows the audio by 2 frames
    c, lag = sync.lagged_corr(opening, env, 3)
    assert lag == 2 and c == pytest.approx(1.0)
    r = sync.audio_sync(opening, wav, 25.0)
    assert r["envelope_lag"] == 2 and r["envelope_corr"] > 0.99
    assert r["envelope_corr_null"] < 0.5  # an unrelated envelope scores near chance


def test_speech_silence_ratio_known_value():
    voiced = np.array([True] * 6 + [False] * 4)
    opening = np.where(voiced, 0.3, 0.1)
    assert sync.speech_silence_ratio(opening, voiced) == pytest.approx(3.0)
    assert sync.speech_silence_ratio(opening[:7], voiced[:7]) is None  # one silent frame: too few
