"""Metric writers passed into the trainer: tensorboard (default), wandb (lazy, offline unless logged in), null.

    writer = make_writer("tensorboard", out_dir)
    writer.scalars({"loss": 0.1, "psnr": 25.0}, step); writer.image("preview", hwc01, step); writer.close()
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional

import numpy as np


class NullWriter:
    """Discards everything."""

    def scalars(self, values: Dict[str, float], step: int) -> None:
        pass

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        pass

    def close(self) -> None:
        pass


class TensorboardWriter(NullWriter):
    """Event files under out_dir/tb (torch.utils.tensorboard)."""

    def __init__(self, log_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self._w = SummaryWriter(str(log_dir))

    def scalars(self, values, step):
        for k, v in values.items():
            self._w.add_scalar(k, float(v), step)

    def image(self, tag, image, step):
        self._w.add_image(tag, np.clip(image, 0, 1), step, dataformats="HWC")

    def close(self):
        self._w.flush()
        self._w.close()


class WandbWriter(NullWriter):
    """wandb, imported lazily; mode "offline" unless WANDB_MODE is set or an API key is configured."""

    def __init__(self, log_dir: Path, project: str = "avatar", config: Optional[dict] = None):
        try:
            import wandb
        except ImportError as e:
            raise RuntimeError("logger='wandb' needs the wandb package (pip install wandb); "
                               "or use logger='tensorboard' / 'none'") from e
        mode = os.environ.get("WANDB_MODE")
        if mode is None:
            logged_in = bool(os.environ.get("WANDB_API_KEY")) or (Path.home() / ".netrc").is_file() and \
                "api.wandb.ai" in (Path.home() / ".netrc").read_text(errors="ignore")
            mode = "online" if logged_in else "offline"
        self._wandb = wandb
        self._run = wandb.init(project=project, dir=str(log_dir), mode=mode, config=config or {})

    def scalars(self, values, step):
        self._run.log({k: float(v) for k, v in values.items()}, step=step)

    def image(self, tag, image, step):
        self._run.log({tag: self._wandb.Image((np.clip(image, 0, 1) * 255).astype(np.uint8))}, step=step)

    def close(self):
        self._run.finish()


def make_writer(kind: str, out_dir: Path, config: Optional[dict] = None) -> NullWriter:
    """Writer for `kind` in {"tensorboard", "wandb", "none"}; tensorboard falls back to null if missing."""
    out_dir = Path(out_dir)
    if kind == "none":
        return NullWriter()
    if kind == "tensorboard":
        try:
            return TensorboardWriter(out_dir / "tb")
        except ImportError:
            return NullWriter()
    if kind == "wandb":
        return WandbWriter(out_dir, config=config)
    raise ValueError(f"logger must be 'tensorboard', 'wandb' or 'none', got {kind!r}")
