"""Personalisation: `avatar train --prior [--prior-finetune]` and `avatar drive --prior [--style CAPTURE|video]`."""
import shutil

import numpy as np
import pytest
import torch

from avatar.commands.drive import Drive
from avatar.commands.prior import PriorTrain
from avatar.prior.config import PriorTrainConfig
from avatar.runtime.blink import BlinkConfig
from avatar.audio.timeline import DriveError
from avatar.commands.train import Train
from avatar.train.trainer import train
from avatar.prior.model import PriorCheckpointError
from avatar.prior.config import MotionPriorConfig
from test_prior_cli import _capture                        # 8x8 capture folders with motion codes + audio
from test_train_fakes import tiny_overrides

M = 147  # MotionSpace code size of the _capture folders


def _overrides(**extra):
    o = tiny_overrides(steps_static=3, steps_deform=8, steps_joint=10, checkpoint_every=100, **extra)
    o["data"] = {"max_size": 16}
    o["model"]["gaussians"].update(num_face=200, num_mouth=40)
    return o


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("prior_int")
    caps = [d / f"person{i}" for i in range(2)]
    for i, c in enumerate(caps):
        _capture(c, i, seconds=3.0)
    prior = d / "prior.pt"
    assert PriorTrain(dirs=tuple(caps), out=prior,
                      train=PriorTrainConfig(steps=6, batch_size=2, window_frames=32, ref_frames=25, warmup_steps=2,
                                             checkpoint_every=0, log_every=0),
                      model=MotionPriorConfig(d_model=32, num_layers=1, num_heads=4, past_frames=8, style_tokens=2,
                                              style_layers=1)).main() == 0
    out = d / "avatar"
    ckpt = train(caps[0], out, preset="tiny", progress=False,
                 overrides=_overrides(prior=str(prior), prior_finetune=True, prior_finetune_steps=3))
    return d, caps, prior, out, ckpt


def test_train_with_prior_uses_motion_codes_and_records_the_prior(setup):
    from avatar.train.config import config_from_dict, read_yaml
    from avatar.data import load_capture
    from avatar.model.avatar import AvatarModel

    d, caps, prior, out, ckpt = setup
    model = AvatarModel.load(ckpt)
    assert model.cfg.deform.use_motion and model.cfg.motion_dim == M        # switched on by --prior (tiny: off)
    assert model.face_deform.w_motion is not None and model.face_deform.w_motion.weight.shape[1] == M
    assert model.face_deform.w_motion.weight.abs().sum() > 0
    # the motion input changes the deformation of the trained model
    n = model.gaussians.means.shape[0]
    feats = torch.randn(n, model.face_deform.w_feat.in_features)
    labels = torch.full((n,), 2, dtype=torch.long)
    audio = torch.zeros(model.face_deform.w_audio.in_features)
    codes = torch.as_tensor(np.asarray(load_capture(caps[0]).tracks["motion"][10], np.float32))
    with torch.no_grad():
        a = model.face_deform(feats, labels, audio, motion=codes)["d_means"]
        b = model.face_deform(feats, labels, audio, motion=torch.zeros(M))["d_means"]
    assert (a - b).abs().max() > 1e-7
    ft = out / "prior_finetuned.pt"
    assert ft.is_file()
    meta = torch.load(ckpt, weights_only=True)["meta"]
    assert meta["prior"] == str(ft.resolve()) and meta["prior_generic"] == str(prior.resolve())
    cfg = config_from_dict(read_yaml(out / "config.yaml"))
    assert cfg.prior == str(prior) and cfg.prior_finetune and cfg.model.deform.use_motion


def test_mismatched_prior_is_a_clear_error(setup, tmp_path, capsys):
    from avatar.model.config import ConfigError

    d, caps, prior, out, ckpt = setup
    other = tmp_path / "other"
    _capture(other, 5, seconds=2.0, scale=5.0)                              # another MotionSpace
    with pytest.raises(PriorCheckpointError, match=r"--prior .*prior\.pt.*other: motion-space .*differs.*scale"):
        train(other, tmp_path / "o", progress=False, overrides=_overrides(prior=str(prior)))
    assert Train(data=other, out=tmp_path / "o2", prior=prior, no_progress=True).main() == 2
    assert "motion-space definition differs" in capsys.readouterr().err
    assert Train(data=other, out=tmp_path / "o3", prior_finetune=True).main() == 2
    assert "--prior-finetune needs --prior" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="prior_finetune: needs prior"):
        train(other, tmp_path / "o4", progress=False, overrides=_overrides(prior_finetune=True))


def _wav(path):
    from avatar.media.audio import save_wav

    t = np.arange(int(16000 * 0.6)) / 16000
    save_wav(path, (0.3 * np.sin(2 * np.pi * 160 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32), 16000)
    return path


def _read(path):
    from avatar.media.video import read_frames

    return np.stack(list(read_frames(path))).astype(int)


def test_drive_uses_the_recorded_prior_and_a_style_capture(setup, tmp_path, monkeypatch):
    import avatar.prior.api as prior_api

    d, caps, prior, out, ckpt = setup
    dd = torch.load(ckpt, weights_only=True)                               # make the deformation visible
    g = torch.Generator().manual_seed(0)
    for k in ("face_deform.head.weight", "mouth_deform.head.weight"):
        dd["modules"][k] = torch.randn(dd["modules"][k].shape, generator=g) * 0.3
    torch.save(dd, tmp_path / "m.pt")
    wav = _wav(tmp_path / "a.wav")
    seen = []
    real = prior_api.predict_prior

    def spy(prior_path, *a, **kw):
        res = real(prior_path, *a, **kw)
        seen.append((str(prior_path), res["motion"]))
        return res
    monkeypatch.setattr(prior_api, "predict_prior", spy)
    off = dict(width=32, height=32, blink=BlinkConfig(enabled=False))
    Drive(str(tmp_path / "m.pt"), wav, out=tmp_path / "plain.mp4", **off).run()          # the recorded prior
    Drive(str(tmp_path / "m.pt"), wav, out=tmp_path / "style.mp4", style=caps[1], **off).run()
    Drive(str(tmp_path / "m.pt"), wav, out=tmp_path / "generic.mp4", prior=prior, **off).run()
    ft = str((out / "prior_finetuned.pt").resolve())
    assert [p for p, _ in seen] == [ft, ft, str(prior)]
    assert seen[0][1].shape == (15, M) and np.abs(seen[0][1] - seen[1][1]).max() > 1e-4   # style changes motion
    a, b = _read(tmp_path / "plain.mp4"), _read(tmp_path / "style.mp4")
    assert a.shape == b.shape == (15, 32, 32, 3)
    # ... and the frames (rendered from the checkpoint's own camera, where the tiny test avatar covers
    # part of the 32x32 frame: the mean runs over the unchanged background too)
    assert np.abs(a - b).max() >= 3 and np.abs(a - b).mean() > 0.05
    with pytest.raises(DriveError, match="not found"):
        Drive(str(tmp_path / "m.pt"), wav, out=tmp_path / "x.mp4", style=tmp_path / "nope", **off).run()


def test_drive_style_video_is_captured_in_process(setup, tmp_path, monkeypatch):
    import capture.pipeline as pipeline
    from capture.errors import CaptureError

    d, caps, prior, out, ckpt = setup
    video = tmp_path / "ref.mp4"
    video.write_bytes(b"not really a video")
    calls = []

    def fake_capture(inputs, out, **kw):
        calls.append(([str(p) for p in inputs], str(out)))
        shutil.copytree(caps[1], out, copy_function=shutil.copyfile)   # what the capture pipeline would write
        return {}
    monkeypatch.setattr(pipeline, "capture", fake_capture)
    drv = Drive(ckpt, video, out=tmp_path / "o" / "out.mp4", style=video)
    cap = drv._style_capture()
    assert cap == tmp_path / "o" / "style_captures" / "ref"
    assert calls == [([str(video)], str(cap))]
    assert drv._style_capture() == cap and len(calls) == 1                 # cached next to the output

    def failing(inputs, out, **kw):
        raise CaptureError("no face found in ref2.mp4")
    monkeypatch.setattr(pipeline, "capture", failing)
    bad = tmp_path / "ref2.mp4"
    bad.write_bytes(b"x")
    with pytest.raises(DriveError, match=r"(?s)--style .*ref2\.mp4: capturing it into .* failed: no face"):
        Drive(ckpt, bad, out=tmp_path / "o" / "out.mp4", style=bad)._style_capture()


def test_cli_flags_parse():
    import tyro

    t = tyro.cli(Train, args=["cap", "--prior", "p.pt", "--prior-finetune"])
    assert str(t.prior) == "p.pt" and t.prior_finetune
    dr = tyro.cli(Drive, args=["m.pt", "--audio", "a.wav", "--prior", "p.pt", "--style", "ref.mp4"])
    assert str(dr.prior) == "p.pt" and str(dr.style) == "ref.mp4"
