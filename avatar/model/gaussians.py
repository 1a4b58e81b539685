"""Canonical 3D Gaussians of the avatar, with a region label per Gaussian.

Per-Gaussian parameters live in one ParameterDict (`params`) and per-Gaussian non-trainable tensors in
`extras` (the region label); `avatar.model.strategy` resizes all of them, and the optimizer state, in
lock-step. Parameterisation: means [N,3] (metres, head frame), quats [N,4] wxyz (unnormalised), log_scales
[N,3], opacity logits [N], colour logits [N,3] (RGB = sigmoid(logit [+ triplane colour])).
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch
from torch import nn

from avatar.data.schema import LABELS
from avatar.model.config import GaussianConfig

# Gaussian region labels are the capture's mask label values; "mouth" Gaussians are the inside-mouth
# branch (rendered as their own layer behind the face)


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


class Gaussians(nn.Module):
    """N Gaussians: `params` (trainable, per Gaussian) and `extras` (non-trainable, per Gaussian)."""

    PARAM_NAMES = ("means", "quats", "log_scales", "opacities", "colors")

    def __init__(self, means: torch.Tensor, labels: torch.Tensor, scale: float = 0.006,
                 opacity: float = 0.3, colors: Optional[torch.Tensor] = None):
        super().__init__()
        N = means.shape[0]
        quats = torch.zeros(N, 4)
        quats[:, 0] = 1.0
        self.params = nn.ParameterDict({
            "means": nn.Parameter(means.float().clone()),                          # [N,3]
            "quats": nn.Parameter(quats),                                          # [N,4] wxyz
            "log_scales": nn.Parameter(torch.full((N, 3), float(np.log(scale)))),  # [N,3]
            "opacities": nn.Parameter(torch.full((N,), _logit(opacity))),          # [N] logits
            "colors": nn.Parameter(torch.zeros(N, 3) if colors is None else colors.float().clone()),  # [N,3]
        })
        self.extras: Dict[str, torch.Tensor] = {"labels": labels.long().clone()}  # [N]

    # the strategy replaces tensors; keep extras on the module's device and in state_dict by hand
    @property
    def labels(self) -> torch.Tensor:
        return self.extras["labels"]

    def __len__(self) -> int:
        return self.params["means"].shape[0]

    @property
    def means(self) -> torch.Tensor:
        return self.params["means"]

    def activated(self) -> Dict[str, torch.Tensor]:
        """Rasterizer-ready tensors: means [N,3], quats [N,4], scales [N,3], opacities [N]."""
        p = self.params
        return {"means": p["means"], "quats": p["quats"], "scales": torch.exp(p["log_scales"]),
                "opacities": torch.sigmoid(p["opacities"])}

    def per_gaussian_state(self) -> Dict[str, torch.Tensor]:
        """Everything saved per Gaussian (parameters + extras), as plain tensors."""
        out = {f"params.{k}": v.detach() for k, v in self.params.items()}
        out.update({f"extras.{k}": v for k, v in self.extras.items()})
        return out

    def load_per_gaussian_state(self, state: Dict[str, torch.Tensor]) -> None:
        """Restore from per_gaussian_state() (any N: the tensors are replaced, not copied into)."""
        for k in self.PARAM_NAMES:
            self.params[k] = nn.Parameter(state[f"params.{k}"].clone())
        for k in list(state):
            if k.startswith("extras."):
                self.extras[k[len("extras."):]] = state[k].clone()

    def _apply(self, fn, recurse=True):  # keep extras on the same device/dtype policy as the module
        super()._apply(fn, recurse)
        self.extras = {k: fn(v) for k, v in self.extras.items()}  # fn keeps integer dtypes
        return self


def _fibonacci_ellipsoid(n: int, radii, center=(0.0, 0.0, 0.0)) -> np.ndarray:
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5 ** 0.5) * i
    d = np.stack([np.cos(theta) * np.sin(phi), np.cos(phi), np.sin(theta) * np.sin(phi)], 1)
    return (d * np.asarray(radii) + np.asarray(center)).astype(np.float32)


def init_gaussians(cfg: GaussianConfig, landmarks: Optional[np.ndarray] = None,
                   mouth_center: Optional[np.ndarray] = None, seed: int = 0,
                   torso_points: Optional[np.ndarray] = None) -> Gaussians:
    """Initial canonical Gaussians in the head frame (metres, OpenCV axes, face at -z).

    landmarks: [478,3] canonical face (e.g. avatar.data.face_model.CANONICAL) or None. Face points are the
    landmarks (jittered), the rest of the head is an ellipsoid shell `cfg.head_radii`, the torso a wide
    shell below the head (or `torso_points` [T,3], e.g. the capture's torso pixels unprojected), the
    inside-mouth branch a small cloud behind the lips (`mouth_center`, default
    the lip-landmark centre or a fixed point).
    """
    rng = np.random.default_rng(seed)
    pts, labels = [], []
    r = np.asarray(cfg.head_radii, dtype=np.float32)
    n_face = cfg.num_face
    if landmarks is not None and n_face > 0:
        lm = np.asarray(landmarks, np.float32)
        n_lm = min(n_face // 3, 5 * len(lm))
        sel = lm[rng.integers(0, len(lm), n_lm)] + rng.normal(0, 0.003, (n_lm, 3)).astype(np.float32)
        pts.append(sel)
        labels.append(np.full(n_lm, LABELS["face"]))
        n_face -= n_lm
    shell = _fibonacci_ellipsoid(n_face, r * rng.uniform(0.9, 1.02, (n_face, 1)))
    pts.append(shell)
    # the front (-z) lower part of the shell is face, the rest head/hair
    labels.append(np.where((shell[:, 2] < -0.3 * r[2]) & (shell[:, 1] > -0.4 * r[1]), LABELS["face"], LABELS["head"]))
    if cfg.num_torso > 0 and torso_points is not None and len(torso_points) > 0:
        tp = np.asarray(torso_points, np.float32)
        pts.append(tp[rng.integers(0, len(tp), cfg.num_torso)] + rng.normal(0, 0.002, (cfg.num_torso, 3)).astype(np.float32))
        labels.append(np.full(cfg.num_torso, LABELS["torso"]))
    elif cfg.num_torso > 0:
        t = _fibonacci_ellipsoid(cfg.num_torso * 2, (0.17, 0.12, 0.10), center=(0.0, 0.27, 0.02))
        t = t[t[:, 1] > 0.2][: cfg.num_torso]
        neck = _fibonacci_ellipsoid(max(0, cfg.num_torso - len(t)), (0.05, 0.06, 0.05), center=(0.0, 0.15, 0.01))
        pts += [t, neck]
        labels += [np.full(len(t), LABELS["torso"]), np.full(len(neck), LABELS["torso"])]
    if cfg.num_mouth > 0:
        if mouth_center is None:
            if landmarks is not None:
                from avatar.data.face_model import LIPS_INNER

                mouth_center = np.asarray(landmarks, np.float32)[LIPS_INNER].mean(0) + np.array([0, 0, 0.015])
            else:
                mouth_center = np.array([0.0, 0.05, -0.07], np.float32)
        m = rng.normal(0, 1, (cfg.num_mouth, 3)) * np.array([0.02, 0.008, 0.008]) + mouth_center
        pts.append(m.astype(np.float32))
        labels.append(np.full(cfg.num_mouth, LABELS["mouth"]))
    means = torch.from_numpy(np.concatenate(pts, 0).astype(np.float32))
    lab = torch.from_numpy(np.concatenate(labels, 0).astype(np.int64))
    return Gaussians(means, lab, scale=cfg.init_scale, opacity=cfg.init_opacity)
