"""LPIPS (Zhang et al. 2018, v0.1, AlexNet backbone) from local weight files only; never downloads.

The network is written here in plain torch (the `lpips` package itself needs torchvision):
AlexNet's five conv/ReLU stages (torchvision's `alexnet().features` layout, so its checkpoint
loads as is), each stage's activations unit-normalised over channels, squared difference, a
learned 1x1 weighting per stage (`lin0..lin4` of lpips' `weights/v0.1/alex.pth`), spatial mean,
summed over stages. Inputs are scaled to [-1, 1] and shifted/scaled by lpips' ScalingLayer.

Two files are needed:
  backbone  `alexnet-owt-*.pth` (torchvision's ImageNet AlexNet), looked for in the given folder, then
            in torch's hub cache ($TORCH_HOME/hub/checkpoints, default ~/.cache/torch/...)
  linear    `alex.pth` (lpips v0.1 heads), looked for in the given folder, then inside an installed
            `lpips` package (found without importing it)

`find_lpips_weights(folder)` returns (backbone, linear) paths or raises LpipsUnavailable with the
reason, which the eval report prints instead of a number.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

# lpips' ScalingLayer constants (ImageNet statistics on the [-1, 1] scale).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_CHANNELS = (64, 192, 384, 256, 256)


class LpipsUnavailable(RuntimeError):
    """LPIPS weights are not available locally (the message says which file and where it was sought)."""


def _hub_checkpoints() -> Path:
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch")
    return Path(home) / "hub" / "checkpoints"


def find_lpips_weights(folder: Optional[Path] = None) -> Tuple[Path, Path]:
    """(alexnet backbone .pth, lpips alex.pth) found locally, else LpipsUnavailable naming what is missing."""
    dirs = [Path(folder)] if folder is not None else []
    if folder is not None and not Path(folder).is_dir():
        raise LpipsUnavailable(f"LPIPS weights folder {folder} does not exist")
    hub = _hub_checkpoints()
    backbone = None
    for d in dirs + [hub]:
        hits = sorted(d.glob("alexnet-owt-*.pth")) if d.is_dir() else []
        if hits:
            backbone = hits[0]
            break
    lin = None
    lin_dirs = list(dirs)
    spec = importlib.util.find_spec("lpips")
    if spec is not None and spec.origin:
        lin_dirs.append(Path(spec.origin).parent / "weights" / "v0.1")
    for d in lin_dirs:
        if (d / "alex.pth").is_file():
            lin = d / "alex.pth"
            break
    missing = []
    if backbone is None:
        where = ", ".join(str(d) for d in dirs + [hub])
        missing.append(f"AlexNet backbone alexnet-owt-*.pth not found in {where}")
    if lin is None:
        where = ", ".join(str(d) for d in lin_dirs) or "no folder given and no lpips package installed"
        missing.append(f"lpips v0.1 alex.pth not found ({where})")
    if missing:
        raise LpipsUnavailable("; ".join(missing) + " (never downloaded; pass --lpips-weights FOLDER)")
    return backbone, lin


class LpipsAlex:
    """LPIPS-AlexNet on CPU (or `device`). Call with two [T, H, W, 3] (or [H, W, 3]) uint8/float
    images -> float32 [T] distances (0 for identical images)."""

    def __init__(self, backbone: Path, linear: Path, device: str = "cpu"):
        import torch
        from torch import nn

        self.device = torch.device(device)
        feats = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU())
        sd = torch.load(str(backbone), map_location="cpu", weights_only=True)
        sd = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
        try:
            feats.load_state_dict(sd)
        except RuntimeError as e:
            raise LpipsUnavailable(f"{backbone}: not a torchvision AlexNet checkpoint ({e})") from None
        lsd = torch.load(str(linear), map_location="cpu", weights_only=True)
        self.lins = []
        for k, c in enumerate(_CHANNELS):
            w = lsd.get(f"lin{k}.model.1.weight")
            if w is None or tuple(w.shape) != (1, c, 1, 1):
                raise LpipsUnavailable(f"{linear}: expected lin{k}.model.1.weight of shape (1, {c}, 1, 1), "
                                       f"got {None if w is None else tuple(w.shape)}")
            self.lins.append(w.float().to(self.device))
        self.feats = feats.eval().to(self.device)
        # stage k ends after the ReLU at these indices of `feats`
        self._ends = (1, 4, 7, 9, 11)
        self._shift = torch.tensor(_SHIFT).view(1, 3, 1, 1).to(self.device)
        self._scale = torch.tensor(_SCALE).view(1, 3, 1, 1).to(self.device)

    def _stages(self, x):
        out, k = [], 0
        for i, layer in enumerate(self.feats):
            x = layer(x)
            if i == self._ends[k]:
                out.append(x)
                k += 1
                if k == len(self._ends):
                    break
        return out

    def __call__(self, a, b, batch: int = 8) -> np.ndarray:
        import torch

        from .image import as_float

        x, y = as_float(a), as_float(b)
        if x.shape != y.shape or x.shape[-1] != 3:
            raise ValueError(f"lpips: images differ or are not RGB: {x.shape} vs {y.shape}")
        x, y = x.reshape((-1,) + x.shape[-3:]), y.reshape((-1,) + y.shape[-3:])
        res = []
        with torch.no_grad():
            for s in range(0, len(x), batch):
                p, q = (torch.from_numpy(np.ascontiguousarray(v[s:s + batch])).permute(0, 3, 1, 2).to(self.device)
                        for v in (x, y))
                p, q = ((2 * v - 1 - self._shift) / self._scale for v in (p, q))
                d = 0.0
                for fp, fq, w in zip(self._stages(p), self._stages(q), self.lins):
                    fp = fp / (fp.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                    fq = fq / (fq.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                    d = d + ((fp - fq) ** 2 * w.view(1, -1, 1, 1)).sum(1).mean((1, 2))
                res.append(d.cpu().numpy())
        return np.concatenate(res).astype(np.float32)
