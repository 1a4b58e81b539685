"""Motion prior: pitch features, causality, chunked inference, PCA, checkpoints (versioned, checked)."""
import dataclasses

import numpy as np
import pytest
import torch

from avatar.prior.model import MotionPrior, MotionPriorNet, PriorCheckpointError, frame_pitch
from avatar.prior.config import MotionPriorConfig
from avatar.prior.pca import MotionPCA

SR = 16000


def _tone(f0_hz, seconds, sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    ph = 2 * np.pi * np.cumsum(np.broadcast_to(f0_hz, t.shape)) / sr
    return (0.3 * sum(np.sin(k * ph) / k for k in range(1, 8))).astype(np.float32)


def test_pitch_tracks_known_f0_and_silence():
    wav = np.concatenate([_tone(110.0, 1.0), np.zeros(SR // 2, np.float32), _tone(233.0, 1.0)])
    p = frame_pitch(wav, 25.0, 62)                                         # [F, 3]
    assert p.shape == (62, 3) and p.dtype == torch.float32
    f0 = 100 * 2 ** p[:, 0]
    assert torch.allclose(f0[2:23], torch.full((21,), 110.0), rtol=0.01)   # within 1 %
    assert torch.allclose(f0[40:60], torch.full((20,), 233.0), rtol=0.01)
    assert (p[28:35, 1] == 0).all() and (p[28:35, 0] == 0).all()         # silence: unvoiced
    assert (p[2:23, 1] > 0.8).all()
    assert p[28:35, 2].max() < p[2:23, 2].min() - 5                       # log energy


def _cfg(**kw):
    base = dict(audio_dim=8, pitch_dim=3, code_dim=5, d_model=32, num_layers=2, num_heads=4, past_frames=6,
                lookahead_frames=2, conv_kernel=5, style_tokens=2, style_layers=1, dropout=0.0)
    base.update(kw)
    return MotionPriorConfig(**base)


def _prior(cfg=None, motion_dim=7, seed=0):
    torch.manual_seed(seed)
    cfg = cfg or _cfg(style=True)      # style tokens are opt-in (MotionPriorConfig.style defaults to False)
    codes = torch.randn(200, motion_dim) @ torch.randn(motion_dim, motion_dim)
    pca = MotionPCA.fit(codes, 0.0) if cfg.code_dim == motion_dim else MotionPCA.fit(codes, 0.999, cfg.code_dim)
    cfg = dataclasses.replace(cfg, code_dim=pca.latent_dim)
    p = MotionPrior(cfg, pca, {"kind": "test", "version": 1, "indices": [1, 2, 3]}, {"kind": "mel", "n_mels": 8},
                    torch.zeros(8), torch.ones(8), torch.zeros(3), torch.ones(3), torch.zeros(6), torch.ones(6))
    # make the randomly initialised FiLM non-trivial so style matters
    for f in getattr(p.net, "film", ()):
        torch.nn.init.normal_(f.weight, std=0.05)
    return p.eval()


def test_output_depends_only_on_bounded_lookahead():
    net = MotionPriorNet(_cfg()).eval()
    torch.manual_seed(1)
    a, p = torch.randn(1, 40, 8), torch.randn(1, 40, 3)
    o1 = net(a, p)
    a2, p2 = a.clone(), p.clone()
    t = 20
    a2[:, t + 3:] += 5 * torch.randn_like(a2[:, t + 3:])                   # beyond the 2-frame look-ahead
    p2[:, t + 3:] += 1.0
    o2 = net(a2, p2)
    for k in o1:
        assert torch.allclose(o1[k][:, : t + 1], o2[k][:, : t + 1], atol=1e-6), k
        assert not torch.allclose(o1[k][:, t + 1:], o2[k][:, t + 1:], atol=1e-3), k
    a3 = a.clone()
    a3[:, t + 2] += 5.0                                                    # inside the look-ahead: seen
    assert not torch.allclose(net(a3, p)["motion"][:, t], o1["motion"][:, t], atol=1e-4)


def test_chunked_prediction_equals_full_pass_and_style_matters():
    prior = _prior()
    torch.manual_seed(2)
    feats, pitch = torch.randn(300, 8), torch.randn(300, 3)
    style = (torch.randn(40, 8), torch.randn(40, 7))
    full = prior.predict(feats, pitch, style, chunk=10_000)
    chunked = prior.predict(feats, pitch, style, chunk=37)
    for k in full:
        assert torch.allclose(full[k], chunked[k], atol=1e-5), k
    assert full["motion"].shape == (300, 7) and full["blink"].shape == (300,) and full["head_pose"].shape == (300, 6)
    assert ((full["blink"] >= 0) & (full["blink"] <= 1)).all()
    plain = prior.predict(feats, pitch, None)["motion"]
    assert (plain - full["motion"]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="ref_motion"):
        prior.predict(feats, pitch, (torch.randn(40, 8), torch.randn(30, 7)))
    with pytest.raises(ValueError, match=r"audio features must be \[..., 8\]"):
        prior.predict(torch.randn(10, 9), torch.randn(10, 3))
    # the default network has no style input: no style modules, and a reference is refused, not ignored
    nostyle = _prior(_cfg())
    assert not hasattr(nostyle.net, "film") and not hasattr(nostyle.net, "style_encoder")
    a = nostyle.predict(feats, pitch, None, chunk=10_000)["motion"]
    assert torch.allclose(a, nostyle.predict(feats, pitch, None, chunk=37)["motion"], atol=1e-5)
    with pytest.raises(ValueError, match="no style input"):
        nostyle.predict(feats, pitch, style)


def test_pca_roundtrip_whitening_and_identity_mode():
    torch.manual_seed(3)
    lat = torch.randn(500, 3) * torch.tensor([3.0, 1.0, 0.3])
    mix = torch.linalg.qr(torch.randn(10, 10))[0][:3]                    # [3, 10] orthonormal rows
    codes = lat @ mix + 0.5 + 1e-4 * torch.randn(500, 10)
    pca = MotionPCA.fit(codes, 0.999)
    assert pca.latent_dim == 3 and pca.explained > 0.999
    z = pca.encode(codes)
    assert torch.allclose(z.std(0), torch.ones(3), atol=1e-3)              # whitened
    assert torch.allclose(pca.decode(z), codes, atol=1e-3)
    assert torch.allclose(pca.components @ pca.components.T, torch.eye(3), atol=1e-5)
    ident = MotionPCA.fit(codes, 0.0)
    assert ident.latent_dim == 10 and torch.allclose(ident.decode(ident.encode(codes)), codes, atol=1e-5)
    back = MotionPCA.from_dict(pca.to_dict())
    assert torch.equal(back.components, pca.components)
    with pytest.raises(ValueError, match="version"):
        MotionPCA.from_dict(dict(pca.to_dict(), version=99))
    with pytest.raises(ValueError, match=r"\[\.\.\., 10\]"):
        pca.encode(torch.zeros(4, 9))


def test_checkpoint_roundtrip_weights_only_and_clear_errors(tmp_path):
    prior = _prior(_cfg(code_dim=3, style=True), motion_dim=7)
    prior.style_ref = {"audio": torch.randn(20, 8), "motion": torch.randn(20, 7)}
    prior.calib["gain"] = torch.rand(3) + 0.5                             # calibration travels with the weights
    prior.calib["motion_mean"] = torch.randn(7)
    path = tmp_path / "prior.pt"
    prior.save(path)
    ck = torch.load(path, weights_only=True)                              # plain tensors + python types only
    assert ck["format"] == "avatar.motion_prior" and ck["version"] == 2
    assert ck["config"]["code_dim"] == 3 and ck["pca"]["components"].shape == (3, 7)
    assert ck["motion_space"]["indices"] == [1, 2, 3]
    back = MotionPrior.load(path)
    torch.manual_seed(4)
    f, p = torch.randn(50, 8), torch.randn(50, 3)
    st = (prior.style_ref["audio"], prior.style_ref["motion"])
    a, b = prior.predict(f, p, st), back.predict(f, p, st)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for k, v in prior.calib.items():
        assert torch.equal(back.calib[k], v), k
    assert not list(tmp_path.glob(".*tmp*"))                              # atomic write left no temp file

    back.check_motion_space({"kind": "test", "version": 1, "indices": (1, 2, 3)})
    with pytest.raises(PriorCheckpointError, match=r"motion-space definition differs.*indices"):
        back.check_motion_space({"kind": "test", "version": 1, "indices": [1, 2, 4]}, "capA")
    for key, val, msg in (("version", 1, "version 1"), ("format", "other", "not a motion-prior checkpoint")):
        bad = dict(ck, **{key: val})
        torch.save(bad, tmp_path / "bad.pt")
        with pytest.raises(PriorCheckpointError, match=msg):
            MotionPrior.load(tmp_path / "bad.pt")
    bad = dict(ck, config=dict(ck["config"], d_model=64))
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(PriorCheckpointError, match="inconsistent"):
        MotionPrior.load(tmp_path / "bad.pt")
    (tmp_path / "trunc.pt").write_bytes(path.read_bytes()[:100])
    with pytest.raises(PriorCheckpointError, match="cannot read"):
        MotionPrior.load(tmp_path / "trunc.pt")
    with pytest.raises(PriorCheckpointError, match="not found"):
        MotionPrior.load(tmp_path / "missing.pt")


def test_config_validation():
    with pytest.raises(ValueError, match="conv_kernel"):
        _cfg(conv_kernel=2, lookahead_frames=2).validate()
    with pytest.raises(ValueError, match="num_heads"):
        _cfg(d_model=30).validate()
    with pytest.raises(ValueError, match="unknown fields"):
        MotionPriorConfig.from_dict({"d_model": 8, "bogus": 1})
