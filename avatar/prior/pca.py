"""Compressed, whitened motion-code space for the prior: PCA fitted on the prior's training codes.

codes [..., M] (the person-agnostic MotionSpace codes) <-> z [..., K] (whitened: unit variance per
component on the training data). With `var_fraction=0` (or >= 1 with max_components=M) it is a
per-dimension standardisation (components = identity). The definition travels with the prior
checkpoint (`to_dict`, plain tensors + python types, loadable with weights_only=True).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch

PCA_VERSION = 1


@dataclass
class MotionPCA:
    mean: torch.Tensor        # [M]
    components: torch.Tensor  # [K, M], orthonormal rows (or identity rows when not compressing)
    scale: torch.Tensor       # [K] std of each component on the training data (whitening)
    explained: float          # fraction of training variance kept

    @property
    def code_dim(self) -> int:
        return int(self.components.shape[1])

    @property
    def latent_dim(self) -> int:
        return int(self.components.shape[0])

    @classmethod
    def fit(cls, codes: torch.Tensor, var_fraction: float = 0.99, max_components: Optional[int] = None,
            min_scale: float = 1e-6) -> "MotionPCA":
        """codes [N, M]. var_fraction in (0, 1): keep the fewest components explaining it;
        0: no compression (per-dimension standardisation)."""
        if codes.ndim != 2 or codes.shape[0] < 2:
            raise ValueError(f"MotionPCA.fit: codes must be [N>=2, M], got {tuple(codes.shape)}")
        if not torch.isfinite(codes).all():
            raise ValueError("MotionPCA.fit: codes contain NaN/inf")
        x = codes.double()
        mean = x.mean(0)
        xc = x - mean
        m = x.shape[1]
        if var_fraction <= 0:
            std = xc.std(0).clamp_min(min_scale)
            return cls(mean.float(), torch.eye(m, dtype=torch.float32), std.float(), 1.0)
        cov = xc.T @ xc / (x.shape[0] - 1)
        evals, evecs = torch.linalg.eigh(cov)       # ascending
        evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
        total = float(evals.sum())
        if total <= 0:
            raise ValueError("MotionPCA.fit: the training motion codes have zero variance")
        cum = torch.cumsum(evals, 0) / total
        k = int((cum < var_fraction).sum()) + 1
        if max_components:
            k = min(k, max_components)
        k = max(1, min(k, m))
        comps = evecs[:, :k].T.contiguous()
        # deterministic sign: largest-magnitude entry of each component positive
        idx = comps.abs().argmax(1)
        sign = torch.sign(comps[torch.arange(k), idx])
        comps = comps * sign[:, None]
        scale = evals[:k].sqrt().clamp_min(min_scale)
        return cls(mean.float(), comps.float(), scale.float(), float(cum[k - 1]))

    def encode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [..., M] -> z [..., K] (whitened)."""
        if codes.shape[-1] != self.code_dim:
            raise ValueError(f"MotionPCA.encode: expected motion codes [..., {self.code_dim}], got {tuple(codes.shape)}")
        return ((codes - self.mean.to(codes)) @ self.components.to(codes).T) / self.scale.to(codes)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z [..., K] -> codes [..., M]."""
        if z.shape[-1] != self.latent_dim:
            raise ValueError(f"MotionPCA.decode: expected latents [..., {self.latent_dim}], got {tuple(z.shape)}")
        return (z * self.scale.to(z)) @ self.components.to(z) + self.mean.to(z)

    def to_dict(self) -> Dict[str, Any]:
        return {"version": PCA_VERSION, "mean": self.mean.clone(), "components": self.components.clone(),
                "scale": self.scale.clone(), "explained": float(self.explained)}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "MotionPCA":
        if not isinstance(d, dict) or d.get("version") != PCA_VERSION:
            raise ValueError(f"MotionPCA: unsupported definition version {d.get('version') if isinstance(d, dict) else d!r}"
                             f" (this code reads version {PCA_VERSION})")
        mean, comps, scale = d["mean"], d["components"], d["scale"]
        if comps.ndim != 2 or mean.shape != (comps.shape[1],) or scale.shape != (comps.shape[0],):
            raise ValueError(f"MotionPCA: inconsistent shapes mean {tuple(mean.shape)}, components "
                             f"{tuple(comps.shape)}, scale {tuple(scale.shape)}")
        return cls(mean.float(), comps.float(), scale.float(), float(d["explained"]))
