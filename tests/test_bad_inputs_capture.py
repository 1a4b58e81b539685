"""Bad inputs of `avatar capture` (issue 12), one test per finding: the exit code, the one line
`avatar capture: error: ...`, and a checksum listing showing that no user file changed. Plus Ctrl-C (one
line, the rerun resumes), the mediapipe / TF Lite / protobuf noise, --overwrite in a folder of ours, and
the focal-length sanity of a two-person video."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _bad_inputs import assert_one_line_error, cli, listing

FAST = ["--work-max-size", "256", "--size", "128"]
ROOT = Path(__file__).resolve().parents[1]


def ff(*args):
    from avatar.media.ffmpeg import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-hide_banner", "-y", "-v", "error", *map(str, args)], check=True)


@pytest.fixture(scope="module")
def may(media):
    return media / "video" / "may_5s.mp4"


@pytest.fixture
def mydocs(tmp_path):
    d = tmp_path / "mydocs"
    for rel, text in {"images/holiday.png": "png", "masks/keep.txt": "m", "audio.wav": "my song",
                      "background.png": "bg", "tracks.npz": "t", "transforms.json": "{}",
                      "report/summary.json": "{}", "notes.txt": "n"}.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)
    return d


def test_existing_user_folder_is_refused_untouched(capsys, may, mydocs):
    before = listing(mydocs.parent)
    code, _, err = cli(capsys, ["capture", may, "--out", mydocs, *FAST])
    assert_one_line_error(code, err, "capture", "--out", "mydocs", "did not write")
    assert listing(mydocs.parent) == before


def test_overwrite_does_not_open_a_user_folder(capsys, may, mydocs):
    before = listing(mydocs.parent)
    code, _, err = cli(capsys, ["capture", may, "--out", mydocs, "--overwrite", *FAST])
    assert_one_line_error(code, err, "capture", "did not write")
    assert listing(mydocs.parent) == before


def test_out_equal_to_the_input_video(capsys, may, tmp_path):
    v = tmp_path / "clip.mp4"
    v.write_bytes(may.read_bytes())
    before = listing(tmp_path)
    code, _, err = cli(capsys, ["capture", v, "--out", v, *FAST])
    assert_one_line_error(code, err, "capture", "also an input")
    assert listing(tmp_path) == before


def test_out_is_a_file(capsys, may, tmp_path):
    (tmp_path / "afile").write_text("mine")
    before = listing(tmp_path)
    code, _, err = cli(capsys, ["capture", may, "--out", tmp_path / "afile", *FAST])
    assert_one_line_error(code, err, "capture", "is a file; expected a folder")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("args, needle", [
    (["--size", "0"], "--size 0"),
    (["--fps", "100000"], "--fps 100000"),
    (["--jpeg-quality", "500"], "--jpeg-quality 500"),
])
def test_impossible_options_before_any_stage(capsys, may, tmp_path, args, needle):
    code, _, err = cli(capsys, ["capture", may, "--out", tmp_path / "o", "--work-max-size", "256", *args])
    assert_one_line_error(code, err, "capture", needle, "expected")
    assert list(tmp_path.iterdir()) == []  # refused before anything ran or was written


def test_missing_rig_file(capsys, may, tmp_path):
    code, _, err = cli(capsys, ["capture", may, "--out", tmp_path / "o", "--rig", tmp_path / "nope.json"])
    assert_one_line_error(code, err, "capture", "--rig", "nope.json", "not found")
    assert list(tmp_path.iterdir()) == []


def test_still_image_renamed_mp4(capsys, media, tmp_path):
    fake = tmp_path / "photo.mp4"
    fake.write_bytes((media / "image" / "obama_official_portrait.jpg").read_bytes())
    code, _, err = cli(capsys, ["capture", fake, "--out", tmp_path / "o", *FAST])
    line = assert_one_line_error(code, err, "capture", "photo.mp4", "still image")
    assert "audio" not in line


def _capture_cmd(video, out):
    # `avatar capture ...` through avatar.cli.run_command (tests/_bad_inputs.py parses that one command)
    return [sys.executable, str(ROOT / "tests" / "_bad_inputs.py"), "capture", str(video), "--out", str(out), *FAST]


def test_ctrl_c_is_one_line_and_the_rerun_resumes_without_noise(may, tmp_path):
    out = tmp_path / "cap"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # a background job of a non-interactive shell inherits SIGINT ignored (then Python installs no handler
    # and Ctrl-C is rightly ignored); the test is about our handling of a delivered Ctrl-C
    p = subprocess.Popen(_capture_cmd(may, out), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in p.stdout:  # interrupt inside the faces stage (mediapipe running)
        if line.startswith("[capture] audio:"):
            p.send_signal(signal.SIGINT)
            break
    out_rest, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert err.strip().splitlines() == ["avatar capture: interrupted; rerun the same command to resume "
                                        "(finished stages are kept)"]
    assert (out / ".capture" / "stages" / "audio.json").is_file()
    # the rerun resumes (finished stages skipped) and prints none of the mediapipe/TF Lite/protobuf noise
    r = subprocess.run(_capture_cmd(may, out), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "[capture] probe: done already (skipped)" in r.stdout
    for noise in ("GetPrototype", "TensorFlow Lite", "inference_feedback_manager", "absl::InitializeLog",
                  "W0000", "NORM_RECT"):
        assert noise not in r.stderr + r.stdout, noise
    assert r.stderr.strip() == "", r.stderr
    assert (out / "transforms.json").is_file() and (out / ".avatar-output.json").is_file()
    # --overwrite in a folder of ours replaces only the files it listed: a user's file there stays
    (out / "images" / "mine.txt").write_text("mine")
    mine = listing(out / "images")["mine.txt"]
    r = subprocess.run(_capture_cmd(may, out) + ["--only", "write", "--overwrite", "--image-format", "png"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    names = sorted(x.name for x in (out / "images").iterdir())
    assert listing(out / "images")["mine.txt"] == mine
    assert names[-1] == "mine.txt" and all(n.endswith(".png") for n in names[:-1])  # the old .jpg frames: gone


def test_native_noise_filter_keeps_real_errors(capfd):
    from capture.noise import native_noise_filtered

    with native_noise_filtered():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"W0000 00:00:1796192618.331711    8324 inference_feedback_manager.cc:114] Feedback ...\n")
        os.write(2, b"E0000 00:00:1796192618.331711    8324 model.cc:1] a real error\n")
        # one write: under capfd sys.stderr bypasses fd 2, so print's separate text and "\n" writes could
        # interleave with the filter thread's forwarded lines
        sys.stderr.write("a python warning\n")
        sys.stderr.flush()
    err = capfd.readouterr().err
    assert sorted(err.splitlines()) == ["E0000 00:00:1796192618.331711    8324 model.cc:1] a real error",
                                        "a python warning"]


def test_two_person_video_focal_is_plausible(capsys, media, tmp_path):
    from capture.tracking import FOV_RANGE_DEG

    v = tmp_path / "two.mp4"
    ff("-loop", "1", "-i", media / "image" / "obama_biden_two_people.jpg", "-f", "lavfi", "-i",
       "sine=frequency=200:duration=3.5", "-t", "3.5", "-r", "25", "-vf", "scale=1126:662",
       "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast", "-shortest", v)
    out = tmp_path / "cap"
    code, stdout, _ = cli(capsys, ["capture", v, "--out", out, "--work-max-size", "640", "--size", "128"])
    assert code == 0
    info = json.loads((out / ".capture" / "stages" / "tracking.json").read_text())
    f = info["info"]["streams"]["0"]["focal_work_px"]
    fov = np.degrees(2 * np.arctan(640 / 2 / f))
    assert FOV_RANGE_DEG[0] - 0.01 <= fov <= FOV_RANGE_DEG[1] + 0.01
    assert "focal length estimate" in stdout and "--focal" in stdout
