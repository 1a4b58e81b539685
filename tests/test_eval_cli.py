"""`avatar eval` on the real clip may_5s: itself (perfect), a frozen-mouth copy (no lip motion), the
same frames as an mp4 and as that mp4's decoded frame folder (identical numbers); input errors."""
import json

import numpy as np
import pytest

from avatar.commands.eval import Eval, read_renders


def _frozen_mouth(ds):
    """Every frame with frame 0's lower face (3 x the lips' width, 4.5 x their height: lips, jaw line and
    chin, so mediapipe cannot read the opening from the jaw) pasted, feathered, at that frame's mouth centre."""
    import cv2

    from avatar.data.face_model import LIPS_OUTER

    lips = ds.tracks["landmarks2d"][:, LIPS_OUTER]  # [F, n, 2]
    lo, hi = lips[0].min(0), lips[0].max(0)
    half = ((hi - lo) * 0.5 * np.array([3.0, 4.5])).astype(int) + 2
    c0 = ((lo + hi) / 2).astype(int)
    src = ds.image(0)
    patch = src[c0[1] - half[1]:c0[1] + half[1], c0[0] - half[0]:c0[0] + half[0]]
    alpha = np.zeros(patch.shape[:2], np.float32)
    alpha[3:-3, 3:-3] = 1.0
    alpha = cv2.GaussianBlur(alpha, (0, 0), 2.0)[..., None]
    out = []
    for i in range(ds.num_frames):
        f = ds.image(i)
        c = ((lips[i].min(0) + lips[i].max(0)) / 2).astype(int)
        y0, x0 = c[1] - half[1], c[0] - half[0]
        region = f[y0:y0 + patch.shape[0], x0:x0 + patch.shape[1]]
        region[:] = alpha * patch + (1 - alpha) * region
        out.append((f * 255 + 0.5).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def may(media, tmp_path_factory):
    from avatar.data import load_capture
    from avatar.media.image import save_image
    from avatar.media.video import VideoWriter, read_frames
    from capture.pipeline import capture

    root = tmp_path_factory.mktemp("eval_may")
    cap = root / "cap"
    # 256 px and half the clip held out keep the test fast and the held-out split long enough (62 frames)
    capture([media / "video" / "may_5s.mp4"], cap, size=256, holdout_fraction=0.5, image_format="png",
            log=lambda m: None)
    ds = load_capture(cap)
    frozen = root / "frozen"
    for i, f in enumerate(_frozen_mouth(ds)):
        save_image(frozen / f"frame_{i}.png", f)  # unpadded numbers: natural sort order matters
    # the held-out frames only, upscaled to 320 px (any size is resized to the capture's), as an mp4 ...
    import cv2

    mp4 = root / "heldout_320.mp4"
    with VideoWriter(mp4, ds.fps, 320, 320) as w:
        for i in ds.split["test"]:
            w.write(cv2.resize(ds.image_uint8(int(i)), (320, 320), interpolation=cv2.INTER_LINEAR))
    # ... and as the folder of that mp4's decoded frames
    mp4_frames = root / "heldout_320_frames"
    for i, f in enumerate(read_frames(mp4)):
        save_image(mp4_frames / f"{i:05d}.png", f)
    out = root / "out"
    res = Eval(data=cap, renders=cap / "images", name="self",
               compare=(f"frozen={frozen}", f"mp4={mp4}", f"frames={mp4_frames}"),
               out=out, sheet_frames=4).run()
    return {"ds": ds, "out": out, "res": res, "root": root, "cap": cap, "frozen": frozen}


def test_self_is_perfect(may):
    s = may["res"]["results"]["methods"]["self"]["summary"]
    assert s["frames"] == len(may["ds"].split["test"]) == 62 and s["frames_no_face"] == 0
    assert s["psnr"] == 100.0 and s["ssim"] == 1.0 and s["psnr_face"] == 100.0 and s["ssim_face"] == 1.0
    assert s["lmd"] == 0.0 and s["lmd_iod"] == 0.0
    assert s["mouth_open_corr"] == pytest.approx(1.0)
    assert s["mouth_amplitude_ratio"] == pytest.approx(1.0) and s["mouth_open_mae"] == 0.0
    ref = may["res"]["results"]["reference"]["summary"]
    assert s["envelope_corr"] == pytest.approx(ref["envelope_corr"])


def test_frozen_mouth_has_no_lip_motion(may):
    s = may["res"]["results"]["methods"]["frozen"]["summary"]
    # the detected opening of a frozen mouth still wobbles by ~10 % of the real range (mediapipe reads
    # face context); its correlation is then that of noise: -0.07 here, 0.2-0.4 with smaller patches
    assert abs(s["mouth_open_corr"]) < 0.3, s
    assert s["mouth_amplitude_ratio"] < 0.2, s
    assert s["lmd"] > 1.0 and s["psnr"] < 40.0  # the mouth region differs; the rest is the same frame
    assert s["frames_no_face"] == 0


def test_mp4_and_its_frame_folder_score_the_same(may):
    m = may["res"]["results"]["methods"]
    a, b = m["mp4"]["summary"], m["frames"]["summary"]
    assert a == b
    assert a["psnr"] > 30.0 and a["mouth_open_corr"] > 0.9  # H.264 + resampling, same person and motion


def test_report_files(may):
    out = may["out"]
    data = json.loads((out / "eval.json").read_text())
    assert list(data["methods"]) == ["self", "frozen", "mp4", "frames"]
    assert data["methods"]["self"]["summary"]["lpips"] is None
    assert data["methods"]["self"]["notes"]["lpips"].startswith("LPIPS unavailable")
    md = (out / "eval.md").read_text()
    for name in ("ground truth (reference)", "self", "frozen", "mp4"):
        assert f"| {name} |" in md
    for f in ("mouth_opening.png", "contact_self.png", "contact_frozen.png"):
        assert (out / f).stat().st_size > 1000


def test_read_renders_maps_full_and_split_length_inputs(may):
    ds = may["ds"]
    idx = np.asarray(ds.split["test"])
    full = read_renders(may["frozen"], ds.width, ds.height, idx, ds.num_frames)  # frame i = capture frame i
    assert full.shape == (len(idx), ds.height, ds.width, 3)
    from avatar.commands.eval import EvalError

    with pytest.raises(EvalError, match=r"--renders .*: 3 frames, but the capture has 125"):
        few = may["root"] / "few"
        few.mkdir()
        for f in sorted(may["frozen"].iterdir())[:3]:
            (few / f.name).write_bytes(f.read_bytes())
        read_renders(few, ds.width, ds.height, idx, ds.num_frames)


@pytest.mark.parametrize("kwargs, message", [
    (dict(renders="{cap}/images"), "--data CAPTURE is required"),
    (dict(), "nothing to score"),
    (dict(renders="{root}/missing.mp4", data="{cap}"), "missing.mp4 does not exist"),
    (dict(compare=("nonsense",), data="{cap}"), "expected NAME=PATH"),
    (dict(renders="{cap}/images", compare=("images={cap}/images",), data="{cap}"), "given twice"),
    (dict(renders="{cap}/images", data="{root}/nope"), "does not exist; expected a capture folder"),
    (dict(renders="{cap}/masks", data="{cap}", lpips_weights="{root}/nope"), "--lpips-weights"),
])
def test_bad_input_is_one_line_exit_2(may, capsys, kwargs, message):
    from pathlib import Path

    fmt = {"cap": may["cap"], "root": may["root"]}
    kw = {k: (tuple(x.format(**fmt) for x in v) if isinstance(v, tuple) else Path(v.format(**fmt)))
          for k, v in kwargs.items()}
    code = Eval(out=may["root"] / "bad_out", **kw).main()
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("avatar eval: error: ") and message in err and "\n" not in err


def test_cross_driven_scores_sync_only(may):
    from avatar.audio.timeline import frame_sample
    from avatar.media.audio import save_wav

    ds = may["ds"]
    t0 = int(ds.split["test"][0])
    wav = ds.audio[ds.audio_sample(t0):ds.audio_sample(t0) + frame_sample(len(ds.split["test"]), ds.fps)]
    save_wav(may["root"] / "heldout.wav", wav)
    res = Eval(renders=may["root"] / "heldout_320.mp4", audio=may["root"] / "heldout.wav",
               out=may["root"] / "cross").run()
    r = res["results"]["methods"]["heldout_320"]
    s = r["summary"]
    assert s["psnr"] is None and "cross-driven" in r["notes"]["psnr"]
    # the same frames and audio, self-driven (there resized to 256 px, here detected at 320 px)
    ref = may["res"]["results"]["methods"]["mp4"]["summary"]
    assert s["envelope_corr"] == pytest.approx(ref["envelope_corr"], abs=0.03)
    assert s["speech_silence_ratio"] == pytest.approx(ref["speech_silence_ratio"], rel=0.05)
    assert (may["root"] / "cross" / "eval.md").is_file()


def test_avatar_eval_command_line_error():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "avatar", "eval", "--renders", "/nonexistent/r.mp4", "--data", "/tmp"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == "avatar eval: error: --renders: /nonexistent/r.mp4 does not exist"
