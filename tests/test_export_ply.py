"""`avatar export`: standard 3DGS .ply of the canonical avatar and of deformed frames, read back
with plyfile: every property, the count and the values."""
import numpy as np
import pytest

from avatar.io.ply import SH_C0
from avatar.commands.export import Export
from avatar.runtime.sources import GaussianFrames
from avatar.audio.timeline import DriveError, num_frames
from avatar.runtime.sources import load_avatar

from test_drive_video import tiny_checkpoint  # noqa: E402  (tests/ is on sys.path under pytest)

# the reference 3DGS layout (degree-3 SH: f_rest_0..44, zero-filled for the avatar's RGB colours)
PROPS = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(45)]
         + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def read_vertex(path):
    from plyfile import PlyData

    ply = PlyData.read(str(path))
    assert [e.name for e in ply.elements] == ["vertex"]
    v = ply["vertex"]
    assert [p.name for p in v.properties] == PROPS
    assert all(p.val_dtype in ("f4", "float32", "float") for p in v.properties)
    return {p: np.asarray(v[p], np.float64) for p in PROPS}, len(v.data)


def check_against(v, g):
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    np.testing.assert_allclose(np.stack([v["x"], v["y"], v["z"]], 1), g["means"], atol=1e-5)
    np.testing.assert_array_equal(np.stack([v["nx"], v["ny"], v["nz"]], 1), 0)
    np.testing.assert_allclose(sig(v["opacity"]), np.clip(g["opacities"], 1e-6, 1 - 1e-6), atol=1e-5)
    np.testing.assert_allclose(np.exp(np.stack([v[f"scale_{i}"] for i in range(3)], 1)), g["scales"],
                               rtol=1e-4)
    rgb = np.stack([v[f"f_dc_{i}"] for i in range(3)], 1) * SH_C0 + 0.5
    # colours pass float32 SH-DC encoding (x / C0, C0 ~ 0.28) and the deformed colour sum: ~1e-5 rounding
    np.testing.assert_allclose(rgb, g["colors"], atol=5e-5)
    q = np.stack([v[f"rot_{i}"] for i in range(4)], 1)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1, atol=1e-5)
    gq = g["quats"] / np.linalg.norm(g["quats"], axis=1, keepdims=True)
    np.testing.assert_allclose(np.abs((q * gq).sum(1)), 1, atol=1e-5)


def test_export_canonical_avatar(ckpt, tmp_path):
    import torch

    out = tmp_path / "avatar.ply"
    assert Export(str(ckpt), out=out).run() == [out]
    v, n = read_vertex(out)
    model = load_avatar(ckpt).model
    assert n == len(model.gaussians) == 660
    with torch.no_grad():
        g = {k: t.numpy() for k, t in model.deformed(use_deform=False).items()}
    check_against(v, g)
    from avatar.io.ply import read_ply  # the project's own reader agrees

    s = read_ply(out)
    assert s.means.shape == (660, 3) and s.sh.shape == (660, 16, 3)  # degree-3 slots, zero-filled
    assert not s.sh[:, 1:].any()


def test_export_deformed_frames_follow_the_audio(ckpt, tmp_path):
    from avatar.media.audio import save_wav

    t = np.arange(int(16000 * 0.5)) / 16000
    wav = (0.4 * np.sin(2 * np.pi * 170 * t) * (t > 0.2)).astype(np.float32)
    save_wav(tmp_path / "a.wav", wav, 16000)
    files = Export(str(ckpt), audio=tmp_path / "a.wav", frames=tmp_path / "frames").run()
    n = num_frames(len(wav), 25.0)
    assert len(files) == n == 13
    assert sorted(p.name for p in (tmp_path / "frames").glob("*.ply")) == [f"frame_{i:06d}.ply" for i in range(n)]
    assert (tmp_path / "frames" / ".avatar-output.json").is_file()  # the folder is marked as made by export
    gen = GaussianFrames(str(ckpt))
    ref = dict(gen.frames(wav))
    canon = gen.canonical()
    moved = []
    for i in (0, 6, 12):
        v, count = read_vertex(files[i])
        assert count == 660
        check_against(v, ref[i])
        moved.append(np.abs(np.stack([v["x"], v["y"], v["z"]], 1) - canon["means"]).max())
    assert max(moved) > 1e-3  # deformed, not the canonical avatar
    one = tmp_path / "f6.ply"
    Export(str(ckpt), out=one, frame=6, audio=tmp_path / "a.wav").run()
    v6, _ = read_vertex(one)
    w6, _ = read_vertex(files[6])
    for p in PROPS:
        np.testing.assert_array_equal(v6[p], w6[p])


def test_export_procedural_head_and_errors(tmp_path):
    out = tmp_path / "head.ply"
    Export("procedural", out=out).run()
    v, n = read_vertex(out)
    from avatar.synth.head import procedural_head

    g = {k: t.numpy() for k, t in procedural_head(0.0, 0.0).items() if k != "labels"}
    assert n == len(g["means"]) > 1000
    check_against(v, g)
    with pytest.raises(DriveError, match="--audio"):
        Export("procedural", out=out, frame=3).run()
    with pytest.raises(DriveError, match="--audio"):
        Export("procedural", frames=tmp_path / "f").run()
    from avatar.media.audio import save_wav

    save_wav(tmp_path / "a.wav", np.zeros(3200, np.float32), 16000)
    with pytest.raises(DriveError, match="past the end"):
        Export("procedural", out=out, frame=5, audio=tmp_path / "a.wav").run()
