"""Real (tiny) end-to-end training on CPU: learning happens, resume is exact, kill -9 loses <= N steps."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avatar.train.trainer import Trainer, TrainingError, train
from avatar.train.config import load_config
from avatar.model.avatar import AvatarModel
from test_train_fakes import FakeCapture, tiny_overrides

BACKEND = os.environ.get("AVATAR_TEST_BACKEND", "auto")
HERE = Path(__file__).resolve().parent

PSNR_BOUND_DB = 28.0  # held-out PSNR after 250 steps on the 48x48 fake head (measured 33-34 dB)


def test_tiny_training_loss_falls_and_psnr_rises(tmp_path):
    ds = FakeCapture(num_frames=44, size=48, seed=0)
    cfg = load_config(None, tiny_overrides(80, 180, 250, backend=BACKEND, preview_every=100))
    tr = Trainer(cfg, ds, tmp_path, progress=False)
    path = tr.run()
    hist = tr.history
    first = sum(h["loss"] for h in hist[:4]) / 4
    last = sum(h["loss"] for h in hist[-4:]) / 4
    assert last < 0.45 * first, (first, last)
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["split"] == "test" and ev["num_frames"] == 4
    assert ev["psnr"] > PSNR_BOUND_DB, ev["psnr"]
    assert ev["ssim"] > 0.9 and ev["psnr_face"] is not None and ev["mouth_psnr"] > 15
    assert hist[0]["psnr"] < 24 < ev["psnr"]  # it rose
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "previews" / "step_000100.png").is_file()
    assert len(list((tmp_path / "checkpoints").glob("step_*.pt"))) <= cfg.keep_checkpoints
    m = AvatarModel.load(path)
    assert len(m.gaussians) == int(hist[-1]["num_gaussians"]) and len(m.gaussians) > 580  # densified
    # the benchmark's contact sheet and dark-pixel threshold work on a trained run
    import cv2

    from avatar.commands.bench.train import BenchTrain

    BenchTrain._contact_sheet({"dynamic": tr, "static": tr}, tmp_path / "sheet.png", n=3)
    assert cv2.imread(str(tmp_path / "sheet.png")).shape == (3 * 48, 3 * 48, 3)
    thr = BenchTrain._dark_threshold(tr.data)
    assert 0.05 < thr < 0.5


def _small(**kw):
    o = tiny_overrides(12, 24, 30, backend=BACKEND, checkpoint_every=6)
    o["strategy"].update(refine_start=4, refine_every=4, refine_stop=12)
    o.update(kw)
    return load_config(None, o)


def test_resume_continues_exactly(tmp_path):
    ds = FakeCapture(num_frames=16, size=32, seed=2)
    full = Trainer(_small(), ds, tmp_path / "full", progress=False)
    full.run()
    part = Trainer(_small(), ds, tmp_path / "part", progress=False)
    part.run(stop_after=10)  # checkpoint at 6, stop (and save) at 10: mid-phase, after densification
    assert part.step == 10
    again = Trainer(_small(), ds, tmp_path / "part", progress=False)
    again.run(resume=True)
    assert again.step == 30
    a, b = full.model.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), k
    assert torch.equal(full.model.gaussians.labels, again.model.gaussians.labels)


def test_kill_9_mid_run_loses_at_most_checkpoint_every_steps(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(HERE / "test_train_fakes.py"), str(out), BACKEND],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    last = 0
    try:
        for line in proc.stdout:
            if line.startswith("step "):
                last = int(line.split()[1])
            if last >= 47:  # between checkpoints (every 10)
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert last >= 47, proc.stderr.read()[-2000:]
    assert proc.returncode == -signal.SIGKILL
    assert not list((out / "checkpoints").glob("*.tmp"))
    ds = FakeCapture(num_frames=24, size=32, seed=1)
    cfg = load_config(None, tiny_overrides(40, 200, 400, checkpoint_every=10, backend=BACKEND))
    tr = Trainer(cfg, ds, out, progress=False)
    tr.run(resume=True, stop_after=5)
    resumed_from = tr.step - 5
    assert resumed_from % 10 == 0 and 0 <= last - resumed_from <= 10, (last, resumed_from)
    assert tr.history and all(h["loss"] == h["loss"] for h in tr.history)  # it continued, finite


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    ds = FakeCapture(num_frames=16, size=32, seed=3)
    tr = Trainer(_small(), ds, tmp_path, progress=False)
    tr.run(stop_after=6)
    good = sorted((tmp_path / "checkpoints").glob("step_*.pt"))
    assert good
    with torch.no_grad():
        tr.model.color_head[2].bias.fill_(float("nan"))
    with pytest.raises(TrainingError, match=r"non-finite .* step 6.*Last good checkpoint: .*step_000006\.pt"):
        tr.run()
    assert sorted((tmp_path / "checkpoints").glob("step_*.pt")) == good
    assert AvatarModel.load(good[-1]) is not None


def test_train_api_reads_a_capture_folder_and_errors_clearly(tmp_path):
    from avatar.data import DatasetError

    with pytest.raises(DatasetError):
        train(tmp_path / "no_such_capture", tmp_path / "out", preset="tiny", progress=False)
