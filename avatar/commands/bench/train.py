"""`avatar bench train` -> benchmarks/results/train.json (+ train_real_contact.png next to it).

Synthetic: `avatar synth` (a talking head with ground truth) -> `avatar capture` -> train the preset
twice, with deformation and as a static baseline (`static: true`, same steps) -> held-out metrics.
  synthetic_psnr_heldout   PSNR of the deformation model on the held-out split (goal >= 30 dB)
  synthetic_mouth_gain_db  held-out mouth-region PSNR, deformation minus static model (goal >= 3 dB)
  synthetic_mouth_corr     a second synthetic clip's audio (different seed: speech never seen) drives the
                           avatar from a held-out camera; Pearson correlation of the rendered mouth opening
                           with that clip's ground-truth mouth_open (goal >= 0.7). Rendered mouth opening =
                           fraction of dark (mouth-interior-like) pixels in the mouth box, the threshold
                           halfway between the training frames' mouth-interior and face-skin luminance.
Real: ../shared/media/video/may_5s.mp4 captured at `real_size`² and trained the same two ways:
  real_psnr_heldout, real_mouth_gain_db, and a contact sheet (rows: real, deformation, static). No goal
  on them: lip sync on real people is measured, with its goals, by `avatar bench lipsync` (the old
  real_mouth_gain_db >= 0 passed while the real mouth did not move).
Subcommands run as subprocesses (`python -m avatar synth/capture` equivalents), so this app never imports
the capture package.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal

import numpy as np

from avatar.commands.bench.machine import device, versions

REPO = Path(__file__).resolve().parents[2]


def _run_command(name: str, args: List[str]) -> None:
    """Run one `avatar <name>` command in a subprocess (loads only that command's module)."""
    code = ("import sys, importlib, tyro; from avatar.cli import COMMANDS; m, c = COMMANDS[sys.argv[1]]; "
            "r = tyro.cli(getattr(importlib.import_module(m), c), args=sys.argv[2:]).main(); "
            "sys.exit(r if isinstance(r, int) else 0)")
    subprocess.run([sys.executable, "-c", code, name, *args], check=True, cwd=str(REPO))


@dataclass
class BenchTrain:
    """Train the tiny preset on a synthetic and a real capture; held-out quality and mouth metrics."""

    out: Path = Path("benchmarks/results/train.json")
    """Result JSON (the contact sheet is written next to it)."""
    work: Path = Path("outputs/bench_train")
    """Working folder (synthetic clips, captures, runs); existing captures are reused."""
    preset: str = "tiny"
    """Training preset for every run."""
    synth_seconds: float = 12.0
    """Length of the synthetic training clip."""
    synth_size: int = 192
    """Synthetic video and capture size (pixels, square)."""
    drive_seconds: float = 8.0
    """Length of the second synthetic clip whose audio drives the avatar (mouth correlation)."""
    real_video: Path = REPO.parent / "shared" / "media" / "video" / "may_5s.mp4"
    """Real talking-head video."""
    real_size: int = 256
    """Capture size of the real video (pixels, square)."""
    real_train_size: int = 256
    """Training resolution (data.max_size) for the real video."""
    real_steps_scale: float = 1.0
    """Multiplier on the preset's phase boundaries for the real runs (CPU time)."""
    skip_synthetic: bool = False
    """Skip the synthetic part."""
    skip_real: bool = False
    """Skip the real-video part."""
    threads: int = 0
    """torch threads for training (0 = torch default)."""
    seed: int = 0
    """Synthetic clip seed (the driving clip uses seed+1)."""
    synth_landmarks: Literal["known", "mediapipe"] = "known"
    """Landmark backend for capturing the synthetic clip: "known" feeds synth's ground-truth landmarks
    (isolates training quality from tracking error), "mediapipe" runs the real detector on it."""

    def main(self) -> int:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        work = Path(self.work)
        work.mkdir(parents=True, exist_ok=True)
        out = Path(self.out)
        cases: Dict[str, Any] = {}
        summary: Dict[str, Any] = {}
        t0 = time.time()
        if not self.skip_synthetic:
            syn = self._synthetic(work)
            cases["synthetic"] = syn
            summary.update(synthetic_psnr_heldout=syn["dynamic"]["psnr"],
                           synthetic_mouth_gain_db=syn["dynamic"]["mouth_psnr"] - syn["static"]["mouth_psnr"],
                           synthetic_mouth_corr=syn["drive"]["mouth_corr"],
                           synthetic_train_minutes=syn["dynamic"]["train_seconds"] / 60.0)
        if not self.skip_real:
            if not Path(self.real_video).is_file():
                cases["real"] = {"skipped": f"video not found: {self.real_video}"}
            else:
                real = self._real(work, out.with_name(out.stem + "_real_contact.png"))
                cases["real"] = real
                summary.update(real_psnr_heldout=real["dynamic"]["psnr"],
                               real_mouth_gain_db=real["dynamic"]["mouth_psnr"] - real["static"]["mouth_psnr"],
                               real_contact_sheet=str(out.with_name(out.stem + "_real_contact.png").name))
        goals = {"synthetic_psnr_heldout": 30.0, "synthetic_mouth_gain_db": 3.0, "synthetic_mouth_corr": 0.7}
        summary["goals_met"] = {k: bool(summary[k] >= v) for k, v in goals.items()
                                if isinstance(summary.get(k), (int, float))}
        result = {
            "device": device(),
            "versions": versions(),
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()},
            "cases": cases,
            "summary": summary,
            "wall_seconds": time.time() - t0,
        }
        from avatar.train.metrics import write_json

        write_json(result, out)
        print(json.dumps(summary, indent=2))
        return 0

    # ---- parts -----------------------------------------------------------------------------------------
    def _train_pair(self, cap: Path, run_dir: Path, overrides: Dict[str, Any]) -> Dict[str, Any]:
        from avatar.data import load_capture
        from avatar.train.config import load_config
        from avatar.train.trainer import Trainer

        ds = load_capture(cap)
        res = {}
        trainers = {}
        for kind in ("dynamic", "static"):
            o = {**overrides, "logger": "none", "threads": self.threads, "static": kind == "static"}
            cfg = load_config(self.preset, o)
            tr = Trainer(cfg, ds, run_dir / kind, progress=True)
            tr.run()
            ev = {k: v for k, v in tr.eval.items() if k not in ("images", "mouth_coverage", "frames")}
            res[kind] = ev
            trainers[kind] = tr
        return {"runs": res, "trainers": trainers, "ds": ds}

    def _synthetic(self, work: Path) -> Dict[str, Any]:
        s = self.synth_size
        clip, drive = work / "synth", work / "synth_drive"
        cap = work / f"synth_capture_{self.synth_landmarks}"
        if not (clip / "video.mp4").is_file():
            _run_command("synth", ["--out", str(clip), "--seconds", str(self.synth_seconds), "--width", str(s),
                                   "--height", str(s), "--seed", str(self.seed), "--overwrite"])
        if not (drive / "audio.wav").is_file():  # only its audio and ground truth are used
            _run_command("synth", ["--out", str(drive), "--seconds", str(self.drive_seconds), "--width", "64",
                                   "--height", "64", "--seed", str(self.seed + 1), "--no-masks", "--overwrite"])
        if not (cap / "transforms.json").is_file():
            known = (["--backend", "known", "--known-landmarks", str(clip / "ground_truth.npz")]
                     if self.synth_landmarks == "known" else [])
            _run_command("capture", [str(clip / "video.mp4"), "--out", str(cap), "--size", str(s), "--overwrite"]
                         + known)
        pair = self._train_pair(cap, work / "synth_runs", {})
        runs = pair["runs"]
        runs["drive"] = self._drive_corr(pair["trainers"]["dynamic"], pair["ds"], drive)
        runs["drive_static"] = self._drive_corr(pair["trainers"]["static"], pair["ds"], drive, use_deform=False)
        return runs

    def _real(self, work: Path, sheet_path: Path) -> Dict[str, Any]:
        cap = work / "real_capture"
        if not (cap / "transforms.json").is_file():
            _run_command("capture", [str(self.real_video), "--out", str(cap), "--size", str(self.real_size),
                                     "--overwrite"])
        from avatar.train.config import load_config

        base = load_config(self.preset)
        phases = [{"name": p.name, "until": int(round(p.until * self.real_steps_scale)), "deform": p.deform,
                   "train_canonical": p.train_canonical, "train_deform": p.train_deform, "lr_scale": p.lr_scale}
                  for p in base.phases]
        over = {"data": {"max_size": self.real_train_size}, "phases": phases,
                "strategy": {"refine_stop": int(round(base.strategy.refine_stop * self.real_steps_scale))}}
        pair = self._train_pair(cap, work / "real_runs", over)
        self._contact_sheet(pair["trainers"], sheet_path)
        return pair["runs"]

    # ---- measurements ----------------------------------------------------------------------------------
    def _drive_corr(self, tr, ds, drive: Path, use_deform: bool = True) -> Dict[str, Any]:
        """Drive with another clip's audio from a held-out camera; correlate rendered vs true mouth opening."""
        import torch

        from avatar.audio.features import feature_windows, frame_features
        from avatar.media.audio import load_audio

        gt = np.load(drive / "ground_truth.npz")
        true_open = np.asarray(gt["mouth_open"], np.float64)
        F = len(true_open)
        d = tr.data
        feats = frame_features(load_audio(drive / "audio.wav"), float(gt["fps"]), F, tr.cfg.audio_features)
        wins = feature_windows(feats, tr.model.window)
        i = int(d.test_idx[len(d.test_idx) // 2])
        thr = self._dark_threshold(d)
        x0, y0, x1, y1 = [int(v) for v in d.mouth_boxes[i]]
        model = tr.model.eval()
        opening, coverage = [], []
        with torch.no_grad():
            for t in range(F):
                if use_deform:
                    rgb, _, cov = model.render_frame(d.viewmats[i:i + 1], d.Ks[i:i + 1], d.width, d.height,
                                                     audio_window=wins[t], background=d.background,
                                                     backend=tr.cfg.backend, return_mouth=True)
                else:
                    out = model.render(d.viewmats[i:i + 1], d.Ks[i:i + 1], d.width, d.height,
                                       background=d.background, use_deform=False, backend=tr.cfg.backend,
                                       torso_transform=model.torso_transform_for(d.viewmats[i]))
                    rgb, cov = out["rgb"].clamp(0, 1), out["mouth_alpha"]
                crop = rgb[0, y0:y1, x0:x1]
                lum = (0.299 * crop[..., 0] + 0.587 * crop[..., 1] + 0.114 * crop[..., 2])
                opening.append(float((lum < thr).float().mean()))
                coverage.append(float(cov[0, y0:y1, x0:x1].mean()))
        op, cv = np.asarray(opening), np.asarray(coverage)

        def corr(a):
            return float(np.corrcoef(a, true_open)[0, 1]) if np.std(a) > 1e-9 else 0.0

        return {"frames": F, "camera_frame": i, "dark_threshold": thr, "mouth_corr": corr(op),
                "mouth_corr_coverage": corr(cv), "opening_range": [float(op.min()), float(op.max())]}

    @staticmethod
    def _dark_threshold(d) -> float:
        """Luminance halfway between mouth-interior (label 3) and face-skin (label 2) pixels of training frames."""
        inner, skin = [], []
        for i in d.train_idx[:: max(1, len(d.train_idx) // 40)]:
            img = d.image(int(i)).numpy()
            lum = img @ np.array([0.299, 0.587, 0.114], np.float32)
            m = d.masks[int(i)].numpy()
            inner.append(lum[m == 3])
            skin.append(lum[m == 2])
        inner_c, skin_c = np.concatenate(inner), np.concatenate(skin)
        if len(inner_c) == 0 or len(skin_c) == 0:
            return 0.25
        return float((np.median(inner_c) + np.median(skin_c)) / 2)

    @staticmethod
    def _contact_sheet(trainers: Dict[str, Any], path: Path, n: int = 5) -> None:
        import cv2
        import torch

        from avatar.media.image import save_image

        dyn, sta = trainers["dynamic"], trainers["static"]
        d = dyn.data
        idx = d.test_idx[np.linspace(0, len(d.test_idx) - 1, min(n, len(d.test_idx))).round().astype(int)]
        rows = {"real": [], "dynamic": [], "static": []}
        with torch.no_grad():
            for i in idx:
                i = int(i)
                rows["real"].append(d.image(i).numpy())
                rgb, _ = dyn.model.eval().render_frame(d.viewmats[i:i + 1], d.Ks[i:i + 1], d.width, d.height,
                                                       audio_window=d.audio[i], background=d.background,
                                                       backend=dyn.cfg.backend)
                rows["dynamic"].append(rgb[0].numpy())
                out = sta.model.eval().render(d.viewmats[i:i + 1], d.Ks[i:i + 1], d.width, d.height,
                                              background=d.background, use_deform=False, backend=sta.cfg.backend,
                                              torso_transform=sta.model.torso_transform_for(d.viewmats[i]))
                rows["static"].append(out["rgb"][0].clamp(0, 1).numpy())
        grid = np.concatenate([np.concatenate(r, 1) for r in rows.values()], 0)
        img = cv2.cvtColor((grid * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR)
        for k, name in enumerate(rows):
            cv2.putText(img, name, (4, 14 + k * d.height), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
        save_image(path, img[..., ::-1])  # BGR (OpenCV's text overlay) -> RGB
