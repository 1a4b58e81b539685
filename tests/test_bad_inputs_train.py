"""Bad inputs of `avatar train` (issue 12), one test per finding: the exit code, the one line
`avatar train: error: ...`, a checksum listing showing that no user file changed; Ctrl-C; progress lines
with --no-progress and when stderr is not a terminal; the output-folder rules (avatar.io.outdir)."""

import pytest

from _bad_inputs import assert_one_line_error, cli, listing
from test_train_fakes import FakeCapture, tiny_overrides


@pytest.fixture(scope="module")
def cap(tmp_path_factory):
    """FakeCapture written to disk as a real capture folder (CaptureWriter), 16 frames of 32 px."""
    from avatar.data import CaptureWriter

    fc = FakeCapture(num_frames=16, size=32, seed=2)
    root = tmp_path_factory.mktemp("train_bad") / "cap"
    with CaptureWriter(root, fps=fc.fps, image_ext="png") as w:
        for i in range(fc.num_frames):
            w.add_frame(fc.image(i), fc.mask(i), fc.Ks[i], fc.tracks["head_pose"][i], time=i)
        w.write_background(fc.background)
        w.write_audio(fc.audio)
        w.write_tracks(**fc.tracks)
    return root


@pytest.fixture
def user(tmp_path):
    u = tmp_path / "mydocs"
    (u / "2024").mkdir(parents=True)
    (u / "cv.pdf").write_bytes(b"%PDF mine")
    (u / "2024" / "notes.txt").write_text("notes")
    return u


def test_train_on_a_missing_capture(capsys, tmp_path):
    code, _, err = cli(capsys, ["train", tmp_path / "nope", "--out", tmp_path / "o"])
    line = assert_one_line_error(code, err, "train", "nope: does not exist", "avatar capture")
    assert "--from" not in line
    assert list(tmp_path.iterdir()) == []


def test_train_on_an_unfinished_capture(capsys, tmp_path):
    (tmp_path / "cap" / ".capture" / "stages").mkdir(parents=True)
    before = listing(tmp_path)
    code, _, err = cli(capsys, ["train", tmp_path / "cap", "--out", tmp_path / "o"])
    line = assert_one_line_error(code, err, "train", "unfinished", "rerun the same `avatar capture")
    assert "--from write" not in line
    assert listing(tmp_path) == before


def test_train_out_into_a_user_folder(capsys, cap, user):
    before = listing(user)
    code, _, err = cli(capsys, ["train", cap, "--out", user])
    assert_one_line_error(code, err, "train", "--out", "did not write")
    assert listing(user) == before


def test_train_out_equal_to_the_capture(capsys, cap):
    before = listing(cap)
    code, _, err = cli(capsys, ["train", cap, "--out", cap])
    assert_one_line_error(code, err, "train", "also an input")
    assert listing(cap) == before


def test_ctrl_c_in_train_is_one_line(capsys, cap, tmp_path, monkeypatch):
    from avatar.train import trainer

    def boom(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer.Trainer, "train_step", boom)
    code, _, err = cli(capsys, ["train", cap, "--out", tmp_path / "o", "--no-progress"])
    assert code == 130
    assert err.strip().splitlines()[-1] == ("avatar train: interrupted; rerun with --resume to continue from the "
                                            "last checkpoint")
    assert "Traceback" not in err
    assert (tmp_path / "o" / ".avatar-output.json").is_file()


@pytest.mark.parametrize("progress", [False, True])
def test_progress_is_a_line_now_and_then_not_one_per_step(capsys, tmp_path, monkeypatch, progress):
    """--no-progress (progress=False) still prints a line now and then; with progress on and stderr not a
    terminal (here: captured) a plain line every few seconds replaces the per-step tqdm bar."""
    from avatar.train.config import load_config
    from avatar.train.trainer import Trainer

    monkeypatch.setenv("AVATAR_PROGRESS_S", "0.1")
    cfg = load_config(None, tiny_overrides(steps_static=8, steps_deform=12, steps_joint=16, checkpoint_every=100))
    Trainer(cfg, FakeCapture(num_frames=12, size=32, seed=3), tmp_path / "o", progress=progress).run()
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("[train]") and "steps" in ln]
    assert lines and len(lines) < 12, err  # a line every 0.1 s here, not one per step
    assert "\r" not in err  # no redrawn bar in a log
    assert "/16 steps" in lines[0]


# ------------------------------------------------------------------------------- the output-folder rules
def test_outdir_manifest_and_publish_keep_unlisted_files(tmp_path):
    from avatar.io.outdir import MARKER, OutputDirError, claim_dir, publish_dir

    d = claim_dir(tmp_path / "f", "frames")
    d.add("a.png")
    (tmp_path / "f" / "a.png").write_text("old")
    (tmp_path / "f" / "mine.txt").write_text("mine")
    new = tmp_path / ".tmp"
    new.mkdir()
    (new / "b.png").write_text("new")
    publish_dir(new, tmp_path / "f", "frames")
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == [MARKER, "b.png", "mine.txt"]
    with pytest.raises(OutputDirError, match="'frames' folder"):
        claim_dir(tmp_path / "f", "capture")
    clash = tmp_path / ".tmp2"
    clash.mkdir()
    (clash / "mine.txt").write_text("would replace the user's file")
    with pytest.raises(OutputDirError, match="mine.txt"):
        publish_dir(clash, tmp_path / "f", "frames")
    assert (tmp_path / "f" / "mine.txt").read_text() == "mine"


def test_capture_folder_of_an_older_version_is_adopted(tmp_path):
    """A capture folder written before markers existed (.capture/stages/) stays usable: adopted, with only
    the capture layout's files listed."""
    from avatar.io.outdir import claim_dir
    from capture.pipeline import adopt_capture

    root = tmp_path / "old"
    (root / ".capture" / "stages").mkdir(parents=True)
    (root / "images").mkdir()
    (root / "images" / "000000.jpg").write_bytes(b"x")
    (root / "images" / "holiday.jpg").write_bytes(b"mine")
    (root / "transforms.json").write_text("{}")
    d = claim_dir(root, "capture", adopt=adopt_capture)
    assert d.owns("images/000000.jpg") and d.owns("transforms.json") and d.owns(".capture/stages/x.json")
    assert not d.owns("images/holiday.jpg")
    d.remove_owned("images/")
    assert [p.name for p in (root / "images").iterdir()] == ["holiday.jpg"]
