"""`avatar demo` end to end (synth -> capture -> train -> drive) with a shortened preset.

The real demo trains the `tiny` preset (minutes); here the same code path runs with a few steps so
the test checks the wiring and the outputs, not the quality (tests/test_train_e2e.py does that).
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]


def _short_preset(tmp_path: Path) -> Path:
    cfg = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    cfg["data"]["max_size"] = 64
    cfg["phases"] = [{"name": "static", "until": 40},
                     {"name": "deform", "until": 80, "deform": True, "train_canonical": False,
                      "train_deform": True}]
    cfg["strategy"].update(refine_start=10, refine_stop=30, refine_every=10)
    cfg["checkpoint_every"], cfg["preview_every"] = 40, 80
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_demo_writes_video_with_sound_preview_and_metrics(tmp_path):
    from avatar.commands.demo import Demo, run_demo
    from avatar.media.probe import probe

    out = tmp_path / "demo"
    metrics = run_demo(Demo(out=out, preset=str(_short_preset(tmp_path)), seconds=4.0, size=96))

    info = probe(out / "demo.mp4")
    assert info.has_video and info.has_audio, "demo.mp4 must carry video and sound"
    assert (out / "preview.png").is_file()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["drive_frames"] == metrics["drive_frames"] > 0
    ev = saved["heldout_eval"]
    assert ev is not None and np.isfinite(ev["psnr"]) and ev["psnr"] > 15.0, ev

    # a rerun reuses every finished step (nothing is trained again)
    again = run_demo(Demo(out=out, preset=str(_short_preset(tmp_path)), seconds=4.0, size=96))
    assert "train_s" not in again["timings_s"] and "synth_s" not in again["timings_s"]


def test_demo_reports_a_missing_video_clearly(tmp_path):
    r = subprocess.run([sys.executable, "-m", "avatar", "demo", "--out", str(tmp_path), "--video",
                        str(tmp_path / "nope.mp4")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2
    assert "nope.mp4" in r.stderr and "no such file" in r.stderr
