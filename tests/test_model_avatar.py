"""Avatar checkpoints: round trip (weights_only), config inside, version checks, cached inference features."""

import pytest
import torch

from avatar.model.avatar import AvatarModel, CheckpointError
from test_model_deform import BACKEND, camera, small_model


def _perturb(m):
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    m.invalidate_cache()


def test_save_load_round_trip_renders_identically(tmp_path):
    m = small_model()
    _perturb(m)
    m.eval()
    V, K = camera()
    w = torch.randn(5, 6)
    mo = torch.randn(3)
    a = m.render_frame(V, K, 32, 32, audio_window=w, motion=mo, blink=0.3, backend=BACKEND)
    path = m.save(tmp_path / "a.pt", meta={"step": 7})
    assert not list(tmp_path.glob("*.tmp"))  # atomic: no temp leftovers
    d = torch.load(path, weights_only=True)
    assert d["version"] == 1 and d["model_config"]["deform"]["hidden"] == 16 and d["meta"]["step"] == 7
    m2 = AvatarModel.load(path)
    assert not m2.training and len(m2.gaussians) == len(m.gaussians)
    assert torch.equal(m2.gaussians.labels, m.gaussians.labels)
    b = m2.render_frame(V, K, 32, 32, audio_window=w, motion=mo, blink=0.3, backend=BACKEND)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert float((a[0] - m.render_frame(V, K, 32, 32, backend=BACKEND)[0]).abs().max()) > 1e-3  # audio matters
    # encode_audio + audio_latent gives the same frame as audio_window
    c = m2.render_frame(V, K, 32, 32, audio_latent=m2.encode_audio(w[None])[0], motion=mo, blink=0.3, backend=BACKEND)
    assert torch.allclose(c[0], b[0], atol=1e-6)


def test_canonical_features_cached_in_eval_only():
    m = small_model()
    m.eval()
    c1 = m.canonical_features()
    assert m.canonical_features() is c1
    m.train()
    assert m.canonical_features() is not c1


def test_bad_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        AvatarModel.load(tmp_path / "missing.pt")
    torch.save({"hello": 1}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="not an avatar checkpoint"):
        AvatarModel.load(tmp_path / "x.pt")
    m = small_model()
    d = m.checkpoint_dict()
    d["version"] = 99
    torch.save(d, tmp_path / "v.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        AvatarModel.load(tmp_path / "v.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match=r"junk\.pt: not a PyTorch checkpoint file .*expected an avatar checkpoint"):
        AvatarModel.load(tmp_path / "junk.pt")
