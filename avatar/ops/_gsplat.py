"""The `gsplat` backend: an adapter to gsplat.rasterization (Apache-2.0), CUDA tensors only."""
from __future__ import annotations

import torch


def rasterize(means, quats, scales, opacities, colors, viewmats, Ks, backgrounds, *, width, height,
              near_plane, far_plane, sh_degree, render_mode, eps2d, antialiased):
    """Caller-shaped inputs (gsplat takes the same leading batch dims) -> render [..., C, H, W, D'],
    alphas [..., C, H, W, 1], means2d [..., C, N, 2] (the tensor gsplat rendered from, so its .grad
    fills), radii [..., C, N] int32 (max of gsplat's per-axis radii), depths [..., C, N]."""
    from gsplat import rasterization

    render, alphas, meta = rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, sh_degree=sh_degree,
        packed=False, backgrounds=backgrounds, render_mode=render_mode,
        rasterize_mode="antialiased" if antialiased else "classic")
    radii = meta["radii"]
    if radii.dim() == means.dim() + 1:          # gsplat >= 1.5: per-axis radii [..., C, N, 2]
        radii = radii.amax(-1)
    return render, alphas, meta["means2d"], radii.to(torch.int32), meta["depths"]
