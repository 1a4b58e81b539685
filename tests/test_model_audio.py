"""Audio features (log-mel in torch, frame alignment) and the AudioEncoder's causal window."""
import numpy as np
import pytest
import torch

from avatar.audio.features import (AudioFeatureConfig, AudioFeatureError, feature_windows, frame_features,
                                   log_mel, mel_filterbank)
from avatar.model.audio_encoder import AudioEncoder
from avatar.model.config import AudioEncoderConfig


def test_mel_peak_band_matches_tone_frequency():
    cfg = AudioFeatureConfig(n_mels=40)
    sr = 16000
    t = np.arange(sr) / sr
    for hz in (300.0, 1000.0, 3000.0):
        mel = log_mel(torch.from_numpy(np.sin(2 * np.pi * hz * t).astype(np.float32)), cfg)  # [T, 40]
        fb = mel_filterbank(40, cfg.n_fft, sr, cfg.fmin, cfg.fmax)  # [freqs, 40]
        centres = (fb * torch.linspace(0, sr / 2, fb.shape[0])[:, None]).sum(0) / fb.sum(0)
        band = int(mel[10:-10].mean(0).argmax())
        assert abs(float(centres[band]) - hz) / hz < 0.12, (hz, float(centres[band]))


@pytest.mark.parametrize("fps", [25.0, 30.0, 29.97, 60.0])
def test_frames_align_to_video_time(fps):
    """A noise burst during video frames [10, 14) lights up exactly those frames' features."""
    F = 30
    sr = 16000
    wav = np.zeros(int(F / fps * sr) + 1, np.float32)
    a, b = int(round(10 / fps * sr)), int(round(14 / fps * sr))
    wav[a:b] = np.random.default_rng(0).standard_normal(b - a).astype(np.float32) * 0.3
    feats = frame_features(wav, fps, F)
    assert feats.shape == (F, 32) and feats.dtype == torch.float32
    energy = feats.mean(1).numpy()
    loud = energy > (energy.max() + energy.min()) / 2
    assert loud[11:13].all() and not loud[:9].any() and not loud[16:].any(), np.round(energy, 2)


def test_features_pad_past_audio_end_and_reject_bad_input():
    wav = np.random.default_rng(0).standard_normal(1600).astype(np.float32)  # 0.1 s
    f = frame_features(wav, 25.0, 10)  # 0.4 s of video
    assert f.shape == (10, 32) and torch.isfinite(f).all()
    with pytest.raises(AudioFeatureError, match="mono"):
        frame_features(np.zeros((2, 100), np.float32), 25, 4)
    with pytest.raises(AudioFeatureError, match="empty"):
        frame_features(np.zeros(0, np.float32), 25, 4)
    with pytest.raises(AudioFeatureError, match="fps"):
        frame_features(wav, 0, 4)


def test_speech_model_features_need_local_weights():
    cfg = AudioFeatureConfig(kind="hubert", model_path="/nonexistent/hubert")
    with pytest.raises(AudioFeatureError, match="hubert"):
        frame_features(np.zeros(16000, np.float32), 25, 5, cfg)


def test_feature_windows_edge_padded():
    feats = torch.arange(5, dtype=torch.float32)[:, None].repeat(1, 3)
    w = feature_windows(feats, 2)
    assert w.shape == (5, 5, 3)
    assert w[0, :, 0].tolist() == [0, 0, 0, 1, 2]
    assert w[4, :, 0].tolist() == [2, 3, 4, 4, 4]
    assert w[2, :, 0].tolist() == [0, 1, 2, 3, 4]


def test_any_sample_rate_file(tmp_path):
    audio = pytest.importorskip("avatar.media.audio")
    sr = 44100
    t = np.arange(sr) / sr
    wav = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    p = tmp_path / "tone.wav"
    audio.save_wav(p, wav, sr)
    from avatar.audio.features import file_features

    f44 = file_features(p, 25.0, 25)
    f16 = frame_features(audio.load_audio(p), 25.0, 25)
    ref = frame_features((0.3 * np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)).astype(np.float32), 25.0, 25)
    assert torch.allclose(f44, f16)
    assert (f44[2:-2] - ref[2:-2]).abs().max() < 0.1


def _encoder(causal, lookahead=1):
    torch.manual_seed(0)
    return AudioEncoder(6, AudioEncoderConfig(window=3, dim=16, latent_dim=5, heads=2, layers=2,
                                              causal=causal, lookahead=lookahead)).eval()


def test_causal_encoder_ignores_frames_beyond_lookahead():
    enc = _encoder(True, lookahead=1)
    x = torch.randn(4, 7, 6)
    z = enc(x)
    assert z.shape == (4, 5)
    y = x.clone()
    y[:, 5:] = torch.randn(4, 2, 6) * 10  # rows k+2.. are beyond the look-ahead
    assert torch.equal(enc(y), z)
    y = x.clone()
    y[:, 4] += 1.0  # k+1 is inside the look-ahead
    assert not torch.allclose(enc(y), z)
    y = x.clone()
    y[:, 0] += 1.0  # the past is seen
    assert not torch.allclose(enc(y), z)


def test_full_window_encoder_sees_future_and_checks_shape():
    enc = _encoder(False)
    x = torch.randn(2, 7, 6)
    y = x.clone()
    y[:, 6] += 1.0
    assert not torch.allclose(enc(x), enc(y))
    assert enc(x[0]).shape == (5,)
    with pytest.raises(ValueError, match="audio window"):
        enc(torch.randn(2, 5, 6))
