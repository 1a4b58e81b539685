"""avatar.ops.rasterize: the one public rasterizer entry point and its backend dispatch."""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from avatar.ops import _backends
from avatar.ops._validate import check_inputs


def rasterize(
    means: Tensor,          # [..., N, 3] world positions
    quats: Tensor,          # [..., N, 4] wxyz, any norm
    scales: Tensor,         # [..., N, 3] linear, >= 0
    opacities: Tensor,      # [..., N] in [0, 1]
    colors: Tensor,         # [..., N, D] features, or SH [..., N, K, 3] with sh_degree
    viewmats: Tensor,       # [..., C, 4, 4] world-to-camera, OpenCV axes
    Ks: Tensor,             # [..., C, 3, 3] pixel intrinsics
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    sh_degree: Optional[int] = None,
    backgrounds: Optional[Tensor] = None,   # [..., C, D]
    render_mode: str = "RGB",
    eps2d: float = 0.3,
    rasterize_mode: str = "classic",
    backend: str = "auto",
    check_finite: bool = True,
) -> Tuple[Tensor, Tensor, Dict]:
    """Render N 3D Gaussians into C pinhole cameras (gsplat's vocabulary and conventions).

    Returns colors [..., C, H, W, D'] (D' = D for "RGB", 1 for "D"/"ED", D+1 for "RGB+D"/"RGB+ED";
    "ED" is the expected depth = accumulated depth / alpha), alphas [..., C, H, W, 1] and meta:
    means2d [..., C, N, 2] (its .grad is filled by backward: use it for densification), radii
    [..., C, N] int32 (the larger of the splat's per-axis pixel extents, see _torch_impl.project;
    0 = culled), depths [..., C, N] camera z, backend (the name used).
    Differentiable w.r.t. means, quats, scales, opacities, colors, backgrounds and viewmats on every
    backend (Ks receive gradients on the torch backend only; `auto` then picks it, with a warning).
    Backgrounds are composited as colors + (1 - alpha) * background on the colour channels.
    `check_finite=False` skips the NaN/inf/range scans (each costs a device sync on GPU).
    """
    chk = check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                       near_plane=near_plane, far_plane=far_plane, sh_degree=sh_degree,
                       backgrounds=backgrounds, render_mode=render_mode, eps2d=eps2d,
                       rasterize_mode=rasterize_mode, check_finite=check_finite)
    name = _backends.resolve(backend, means, camera_grad=Ks.requires_grad)
    batch, N, C = chk.batch, chk.N, chk.C
    B = math.prod(batch)
    flat = dict(
        means=means.reshape(B, N, 3), quats=quats.reshape(B, N, 4), scales=scales.reshape(B, N, 3),
        opacities=opacities.reshape(B, N),
        colors=colors.reshape((B, N) + tuple(colors.shape[len(batch) + 1:])),
        viewmats=viewmats.reshape(B, C, 4, 4), Ks=Ks.reshape(B, C, 3, 3),
        backgrounds=None if backgrounds is None else backgrounds.reshape(B, C, -1),
    )
    settings = dict(width=width, height=height, near_plane=float(near_plane),
                    far_plane=float(far_plane), sh_degree=sh_degree, render_mode=render_mode,
                    eps2d=float(eps2d), antialiased=rasterize_mode == "antialiased")
    if name == "gsplat":
        from avatar.ops import _gsplat
        out = _gsplat.rasterize(means, quats, scales, opacities, colors, viewmats, Ks, backgrounds,
                                **settings)
    else:
        out = _rasterize_tiled(_backends.ops(name), **flat, **settings, batch=batch)
    render, alphas, means2d, radii, depths = out
    if means2d.requires_grad:
        means2d.retain_grad()   # [..., C, N, 2]: the very tensor the pixels were rendered from
    meta = {
        "means2d": means2d,
        "radii": radii.reshape(batch + (C, N)),
        "depths": depths.reshape(batch + (C, N)),
        "backend": name,
    }
    return (render.reshape(batch + tuple(render.shape[-4:])),
            alphas.reshape(batch + tuple(alphas.shape[-4:])), meta)


def _rasterize_tiled(ops, *, means, quats, scales, opacities, colors, viewmats, Ks, backgrounds,
                     width, height, near_plane, far_plane, sh_degree, render_mode, eps2d, antialiased,
                     batch):
    """Projection -> (SH) -> tile compositing, with `ops` the backend's three primitives.
    Shapes are flattened: B batch, C cameras, N Gaussians; the returned means2d has the caller's
    batch dims [..., C, N, 2] and is the tensor the compositing consumed (so its .grad fills)."""
    B, C, N = means.shape[0], viewmats.shape[1], means.shape[1]
    means2d, conics, depths, radii, opac = ops.project(
        means, quats, scales, opacities, viewmats, Ks, width, height, near_plane, far_plane,
        eps2d, antialiased)                                           # [B,C,N,...]
    means2d_out = means2d.reshape(tuple(batch) + (C, N, 2))
    feats = []
    if render_mode in ("RGB", "RGB+D", "RGB+ED"):
        if sh_degree is None:
            feats.append(colors[:, None].expand(B, C, N, colors.shape[-1]))
        else:
            feats.append(ops.sh_colors(sh_degree, colors[..., :(sh_degree + 1) ** 2, :], means, viewmats))
    if render_mode != "RGB":
        feats.append(depths[..., None])
    features = torch.cat(feats, -1) if len(feats) > 1 else feats[0]  # [B,C,N,D']
    Dp = features.shape[-1]
    render, alphas = ops.rasterize_pixels(
        means2d_out.reshape(B * C, N, 2), conics.reshape(B * C, N, 3), features.reshape(B * C, N, Dp),
        opac.reshape(B * C, N), radii.reshape(B * C, N, 2), depths.reshape(B * C, N), width, height)
    render = render.reshape(B, C, height, width, Dp)
    alphas = alphas.reshape(B, C, height, width, 1)
    if backgrounds is not None:
        Dc = backgrounds.shape[-1]
        bg = (1 - alphas) * backgrounds[:, :, None, None, :]
        render = torch.cat([render[..., :Dc] + bg, render[..., Dc:]], -1) if Dp > Dc else render + bg
    if render_mode in ("ED", "RGB+ED"):
        render = torch.cat([render[..., :-1], render[..., -1:] / alphas.clamp_min(1e-10)], -1)
    return render, alphas, means2d_out, radii.amax(-1), depths
