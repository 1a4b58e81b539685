"""Shared random scenes for the rasterizer tests (not a test module)."""
from __future__ import annotations

import math

import torch


def camera(C: int, width: int, height: int, dist: float = 2.0, f: float = None, dtype=torch.float32):
    """C cameras on a small arc looking at the origin (OpenCV axes): viewmats [C,4,4], Ks [C,3,3]."""
    f = f or 1.2 * max(width, height)
    vms, Ks = [], []
    for c in range(C):
        ang = 0.15 * (c - (C - 1) / 2)
        R = torch.tensor([[math.cos(ang), 0, -math.sin(ang)], [0, 1, 0], [math.sin(ang), 0, math.cos(ang)]],
                         dtype=dtype)
        vm = torch.eye(4, dtype=dtype)
        vm[:3, :3] = R
        vm[:3, 3] = torch.tensor([0.02 * c, -0.01 * c, dist], dtype=dtype)
        vms.append(vm)
        Ks.append(torch.tensor([[f, 0, width / 2 + 0.3], [0, f * 1.05, height / 2 - 0.2], [0, 0, 1]], dtype=dtype))
    return torch.stack(vms), torch.stack(Ks)


def gaussians(batch, N: int, K: int = 0, D: int = 3, seed: int = 0, spread: float = 0.4,
              scale: float = 0.03, dtype=torch.float32):
    """Random Gaussians: dict of means [...,N,3], quats, scales, opacities, colors ([...,N,D] or
    SH [...,N,K,3] when K > 0)."""
    g = torch.Generator().manual_seed(seed)
    b = tuple(batch)
    r = lambda *s: torch.rand(*s, generator=g, dtype=dtype)
    n = lambda *s: torch.randn(*s, generator=g, dtype=dtype)
    out = dict(
        means=n(*b, N, 3) * spread,
        quats=n(*b, N, 4),
        scales=scale * torch.exp(n(*b, N, 3) * 0.4),
        opacities=0.05 + 0.9 * r(*b, N),
    )
    out["colors"] = (n(*b, N, K, 3) * 0.3) if K else r(*b, N, D)
    return out
