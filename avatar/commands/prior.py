"""`avatar prior train DIR...` and `avatar prior finetune PRIOR CAPTURE`: the CLI of the motion prior
(avatar.prior). Data-parallel: `torchrun --nproc_per_node 2 -m avatar prior train DIR ... --out prior.pt`
(gloo on CPU, nccl on GPU); without torchrun it trains in one process."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Tuple

import tyro

from avatar.prior.api import _audio_cfg, _log, finetune_on_capture
from avatar.prior.config import MotionPriorConfig, PriorTrainConfig


@dataclass
class PriorTrain:
    """Train the generic motion prior (audio -> motion codes) over many capture folders, one person each."""

    dirs: tyro.conf.Positional[Tuple[Path, ...]] = ()
    """Capture folders (avatar capture) or synth identity folders (ground_truth.npz + audio.wav)."""
    out: Path = Path("outputs/prior.pt")
    """Where the trained prior goes; the resumable state is written next to it (NAME.train.pt)."""
    train: PriorTrainConfig = field(default_factory=PriorTrainConfig)
    """Training knobs."""
    model: MotionPriorConfig = field(default_factory=MotionPriorConfig)
    """Architecture (audio_dim/code_dim are set from the data)."""
    calib: Tuple[Path, ...] = ()
    """Capture folders of other identities (never trained on) that calibrate the prediction amplitude
    after training. Default: every 7th of DIRS (sorted by name, from the 4th) when there are >= 8."""
    n_mels: int = 80
    """Mel bands of the audio features (avatar.audio.features.AudioFeatureConfig.n_mels)."""
    synthetic: int = 0
    """Train on N procedural identities instead of folders (smoke tests and demos)."""
    resume: bool = True
    """Continue from NAME.train.pt when it exists (same clips and config)."""

    def main(self) -> int:
        from avatar.prior.data import SYNTH_MOTION_SPACE, load_clip, synthetic_clip
        from avatar.prior.trainer import train_prior

        acfg = _audio_cfg(n_mels=self.n_mels)
        if self.synthetic and self.dirs:
            raise ValueError("avatar prior train: give capture folders or --synthetic N, not both")
        calib = []
        if self.synthetic:
            clips = [synthetic_clip(1000 + i, acfg) for i in range(self.synthetic)]
            space = SYNTH_MOTION_SPACE
        else:
            if not self.dirs:
                raise ValueError("avatar prior train: give at least one capture folder (or --synthetic N)")
            dirs = sorted(set(Path(d) for d in self.dirs), key=lambda d: d.name)
            cal_dirs = [Path(d) for d in self.calib]
            if not cal_dirs and len(dirs) >= 8:
                cal_dirs = [d for i, d in enumerate(dirs) if i % 7 == 3]
            dirs = [d for d in dirs if d not in set(cal_dirs)]
            clips, space = [], None
            for d in dirs + cal_dirs:
                clip, ms = load_clip(d, acfg)
                if space is not None and ms != space:
                    raise ValueError(f"{d}: its motion-space definition differs from {dirs[0]}'s; "
                                     "all folders must be captured with the same MotionSpace")
                space = ms
                (calib if d in set(cal_dirs) else clips).append(clip)
        _log(f"{len(clips)} clips, {sum(c.num_frames for c in clips)} frames"
             + (f"; calibration on {len(calib)} clips ({', '.join(c.name for c in calib)})" if calib else ""))
        train_prior(clips, space, acfg.to_dict(), self.train, self.model, self.out, resume=self.resume, log=_log,
                    calib_clips=calib)
        _log(f"wrote {self.out}")
        return 0


@dataclass
class PriorFinetune:
    """Personalise a motion prior on one person's capture (and store their style reference in it)."""

    prior: tyro.conf.Positional[Path]
    """The generic prior (avatar prior train)."""
    capture: tyro.conf.Positional[Path]
    """The person's capture folder."""
    out: Optional[Path] = None
    """Output prior (default: next to PRIOR, NAME_<capture>.pt)."""
    steps: int = 300
    """Fine-tuning steps."""
    lr: float = 2e-4
    """Learning rate (small: adapt, do not forget)."""
    batch_size: int = 8
    """Windows per step."""
    ref_seconds: float = 5.0
    """Seconds at the start of the capture stored as the style reference in the output prior."""
    resume: bool = False
    """Continue an interrupted fine-tune from OUT's .train.pt."""

    def main(self) -> int:
        out = finetune_on_capture(self.prior, self.capture, self.out, steps=self.steps, lr=self.lr,
                                  batch_size=self.batch_size, ref_seconds=self.ref_seconds, resume=self.resume)
        _log(f"wrote {out}")
        return 0
