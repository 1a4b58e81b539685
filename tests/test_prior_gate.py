"""The motion prior's silence gate (avatar.prior.gate): weights from voice activity, the closing
blend, the rest deviation, and its place in MotionPrior.predict."""
import pytest
import torch

from avatar.prior.gate import SilenceGateConfig, apply_gate, gate_weights, rest_deviation


def test_gate_weights_dilate_by_lead_and_lag_and_stay_in_unit_range():
    vad = torch.zeros(30)
    vad[10:15] = 1.0
    g = gate_weights(vad, SilenceGateConfig(lead_frames=2, lag_frames=3, smooth_frames=1))
    assert torch.equal(g > 0.5, (torch.arange(30) >= 8) & (torch.arange(30) <= 17))
    gs = gate_weights(vad, SilenceGateConfig())
    assert gs.shape == (30,) and float(gs.min()) >= 0 and float(gs.max()) <= 1
    assert float(gs[0]) == 0.0 and float(gs[12]) == 1.0 and 0 < float(gs[7]) < 1   # soft edge
    with pytest.raises(ValueError, match=r"\[T\]"):
        gate_weights(torch.zeros(3, 2), SilenceGateConfig())
    with pytest.raises(ValueError, match="smooth_frames"):
        SilenceGateConfig(smooth_frames=0)


def test_apply_gate_closes_an_open_mouth_in_a_pause_and_leaves_speech_and_closed_frames():
    open_w = torch.tensor([1.0, 0.0, 0.0])
    rest = torch.tensor([-0.02, 0.3, 0.0])
    dev = torch.tensor([[0.05, 0.0, 1.0],     # speech (gate 1): kept
                        [0.05, 0.0, 1.0],     # pause, more open than rest: goes to rest
                        [-0.08, 0.0, 1.0]])   # pause, more closed than rest: kept
    gate = torch.tensor([1.0, 0.0, 0.0])
    out = apply_gate(dev, gate, rest, open_w, softness=0.0)
    assert torch.allclose(out[0], dev[0]) and torch.allclose(out[1], rest) and torch.allclose(out[2], dev[2])
    soft = apply_gate(dev, gate, rest, open_w, softness=0.005)
    assert torch.allclose(soft[1], rest, atol=1e-4) and torch.allclose(soft[2], dev[2], atol=1e-4)
    half = apply_gate(dev, torch.tensor([0.5, 0.5, 0.5]), rest, open_w, softness=0.0)
    assert torch.allclose(half[1], 0.5 * (dev[1] + rest))


def test_rest_deviation_is_the_mean_over_full_pauses_only():
    dev = torch.arange(40, dtype=torch.float32)[:, None].repeat(1, 2)
    vad = torch.zeros(40)
    vad[10:30] = 1.0                                  # speech in the middle
    cfg = SilenceGateConfig(lead_frames=2, lag_frames=3, smooth_frames=1)
    rest, n = rest_deviation([dev], [vad], cfg)
    pauses = torch.cat([torch.arange(0, 8), torch.arange(33, 40)]).float()   # word edges excluded
    assert n == len(pauses) and torch.allclose(rest, pauses.mean().repeat(2))
    assert rest_deviation([dev], [torch.ones(40)], cfg)[1] == 0


def test_predict_applies_the_gate_only_with_a_fitted_rest():
    from avatar.prior.config import MotionPriorConfig, PriorTrainConfig
    from avatar.prior.data import SYNTH_MOTION_SPACE, synthetic_clip
    from avatar.prior.trainer import build_prior, centred_clip, clip_scale
    from avatar.audio.features import AudioFeatureConfig

    import dataclasses

    clip = synthetic_clip(5, AudioFeatureConfig(n_mels=16))
    clip = dataclasses.replace(clip, pitch=torch.cat([clip.pitch, torch.ones(clip.num_frames, 1)], 1))  # + VAD
    scale = clip_scale(clip.motion)
    cen = [centred_clip(clip, scale)]
    prior = build_prior(cen, SYNTH_MOTION_SPACE, AudioFeatureConfig(n_mels=16).to_dict(),
                        MotionPriorConfig(num_layers=1, d_model=16, num_heads=2),
                        PriorTrainConfig(steps=1), raw_clips=[clip], dev_scale=scale)
    pitch = clip.pitch.clone()
    pitch[:, 3] = 0.0                                  # VAD says: all silence
    prior.calib["open_w"] = torch.ones(prior.motion_dim) / prior.motion_dim
    prior.calib["rest_dev"] = torch.full((prior.motion_dim,), -5.0)
    prior.calib["rest_frames"] = torch.tensor(0.0)
    off = prior.predict(clip.feats, pitch)
    assert torch.all(off["gate"] == 1)                # no rest fitted: the gate stays off
    prior.calib["rest_frames"] = torch.tensor(100.0)
    on = prior.predict(clip.feats, pitch)
    assert torch.all(on["gate"] == 0)
    assert torch.allclose(on["deviation"], prior.calib["rest_dev"].expand_as(on["deviation"]), atol=1e-3)
    raw = prior.predict(clip.feats, pitch, gate=SilenceGateConfig(enabled=False))
    assert torch.allclose(raw["deviation"], off["deviation"])
