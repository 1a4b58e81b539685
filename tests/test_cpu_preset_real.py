"""The cpu preset on a short real clip (may_5s): the trained avatar opens its mouth with the person's
tracked motion on held-out frames (mediapipe on the renders against the real frames), and the preset's
personalised prior is fine-tuned on the training frames only."""
import json

import numpy as np
import pytest

# a cut-down cpu preset: the preset's model, crop and losses; fewer steps (the full preset: 3000)
PHASES = [{"name": "static", "until": 300},
          {"name": "deform", "until": 900, "deform": True, "train_canonical": False, "train_deform": True}]


@pytest.fixture(scope="module")
def trained(media, tmp_path_factory):
    from avatar.commands.train import mediapipe_detector
    from avatar.data import load_capture
    from avatar.train.trainer import train
    from capture.pipeline import capture

    root = tmp_path_factory.mktemp("cpu_preset_real")
    cap = root / "cap"
    capture([media / "video" / "may_5s.mp4"], cap, size=256, holdout_fraction=0.3, log=lambda m: None)
    ckpt = train(cap, root / "run", "cpu", progress=False, make_detector=mediapipe_detector,
                 overrides={"phases": PHASES, "strategy.refine_stop": 600, "checkpoint_every": 900,
                            "preview_every": 0, "prior_finetune_steps": 30, "eval_max_frames": 0})
    return {"ds": load_capture(cap), "ckpt": ckpt, "run": root / "run"}


def test_tracked_mouth_opens_like_the_person(trained):
    from avatar.commands.train import mediapipe_detector
    from avatar.eval.protocol import analyse_reference, score_frames
    from avatar.runtime.heldout import render_capture
    from avatar.runtime.sources import load_avatar

    ds = trained["ds"]
    idx = np.asarray(ds.split["test"], np.int64)
    r = render_capture(load_avatar(trained["ckpt"]), ds, idx, motion="tracked")
    ref = analyse_reference(r["gt"], ds.fps, mediapipe_detector, face_masks=r["masks"])
    s = score_frames(r["pred"], ref, mediapipe_detector)["summary"]
    print("cpu preset on may_5s (held-out, tracked codes):", {k: s[k] for k in
          ("mouth_amplitude_ratio", "mouth_open_corr", "psnr", "frames_no_face")})
    assert s["frames_no_face"] == 0
    assert s["mouth_amplitude_ratio"] >= 0.5, s        # the bound for this test
    assert s["mouth_open_corr"] >= 0.5, s
    assert s["psnr"] > 20.0, s
    # the skinning gain was calibrated on training frames: the rendered amplitude grew with the gain
    cal = json.loads((trained["run"] / "eval.json").read_text())["skin_calibration"]
    assert cal is not None and 0.75 <= cal["skin_gain"] <= 2.0 and cal["ratio_at_probe"] > cal["ratio_at_1"], cal


def test_preset_personalises_the_prior_on_training_frames_only(trained):
    from avatar.prior.model import MotionPrior
    from avatar.runtime.sources import load_avatar, recorded_prior

    ft = trained["run"] / "prior_finetuned.pt"
    avatar = load_avatar(trained["ckpt"])
    assert recorded_prior(avatar) == ft.resolve()          # drive/serve/export use the personalised prior
    ds = trained["ds"]
    train_idx = np.asarray(ds.split["train"], np.int64)
    mean = MotionPrior.load(ft).style_ref["mean"].numpy()
    assert np.allclose(mean, np.asarray(ds.tracks["motion"], np.float32)[train_idx].mean(0), atol=1e-4)
