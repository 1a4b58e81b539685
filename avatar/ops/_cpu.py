"""The `cpu` backend: autograd Functions over avatar._C_cpu (C++/OpenMP forward and hand-written
backward). Same primitives and signatures as avatar.ops._torch_impl (project, sh_colors,
rasterize_pixels), float32 CPU tensors only."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from avatar.ops import _native


def _C():
    return _native.load("cpu")


def _c(t: Tensor) -> Tensor:
    return t.detach().contiguous()


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, quats, scales, opacities, viewmats, Ks, settings):
        args = [_c(t) for t in (means, quats, scales, opacities, viewmats, Ks)]
        means2d, conics, depths, radii, opac = _C().project_fwd(*args, *settings)
        ctx.save_for_backward(*args)
        ctx.settings = settings
        ctx.mark_non_differentiable(radii)
        return means2d, conics, depths, radii, opac

    @staticmethod
    def backward(ctx, v_means2d, v_conics, v_depths, v_radii, v_opac):
        args = ctx.saved_tensors
        grads = [torch.zeros_like(ref) if g is None else _c(g)
                 for g, ref in ((v_means2d, None), (v_conics, None), (v_depths, None), (v_opac, None))
                 ] if False else None
        B, N, C = args[0].shape[0], args[0].shape[1], args[4].shape[1]
        z = args[0].new_zeros
        gm = _c(v_means2d) if v_means2d is not None else z(B, C, N, 2)
        gc = _c(v_conics) if v_conics is not None else z(B, C, N, 3)
        gd = _c(v_depths) if v_depths is not None else z(B, C, N)
        go = _c(v_opac) if v_opac is not None else z(B, C, N)
        v_means, v_quats, v_scales, v_opacities = _C().project_bwd(*args, *ctx.settings, gm, gc, gd, go)
        return v_means, v_quats, v_scales, v_opacities, None, None, None


def project(means, quats, scales, opacities, viewmats, Ks, width, height, near, far, eps2d,
            antialiased):
    """Same contract as _torch_impl.project (viewmats/Ks receive no gradient here)."""
    settings = (int(width), int(height), float(near), float(far), float(eps2d), bool(antialiased))
    return _Project.apply(means, quats, scales, opacities, viewmats, Ks, settings)


class _SH(torch.autograd.Function):
    @staticmethod
    def forward(ctx, degree, coeffs, means, viewmats):
        args = [_c(coeffs), _c(means), _c(viewmats)]
        ctx.save_for_backward(*args)
        ctx.degree = degree
        return _C().sh_fwd(degree, *args)

    @staticmethod
    def backward(ctx, v_colors):
        v_coeffs, v_means = _C().sh_bwd(ctx.degree, *ctx.saved_tensors, _c(v_colors))
        return None, v_coeffs, v_means, None


def sh_colors(sh_degree: int, coeffs: Tensor, means: Tensor, viewmats: Tensor) -> Tensor:
    """coeffs [B,N,K,3], means [B,N,3], viewmats [B,C,4,4] -> colors [B,C,N,3]."""
    return _SH.apply(int(sh_degree), coeffs, means, viewmats)


class _Raster(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, features, opacities, radii, depths, width, height):
        args = [_c(t) for t in (means2d, conics, features, opacities)]
        render, alphas, last, offsets, ids = _C().raster_fwd(*args, _c(radii), _c(depths), width, height)
        ctx.save_for_backward(*args, offsets, ids, alphas, last)
        ctx.size = (width, height)
        return render, alphas

    @staticmethod
    def backward(ctx, v_render, v_alphas):
        means2d, conics, features, opacities, offsets, ids, alphas, last = ctx.saved_tensors
        v_render = torch.zeros_like(alphas.expand(-1, -1, -1, features.shape[-1])) if v_render is None else v_render
        v_alphas = torch.zeros_like(alphas) if v_alphas is None else v_alphas
        g = _C().raster_bwd(means2d, conics, features, opacities, offsets, ids, alphas, last,
                            _c(v_render), _c(v_alphas), *ctx.size)
        return g[0], g[1], g[2], g[3], None, None, None, None


def rasterize_pixels(means2d: Tensor, conics: Tensor, features: Tensor, opacities: Tensor,
                     radii: Tensor, depths: Tensor, width: int, height: int) -> Tuple[Tensor, Tensor]:
    """Same contract as _torch_impl.rasterize_pixels: [I,N,...] -> render [I,H,W,D], alphas [I,H,W,1]."""
    return _Raster.apply(means2d, conics, features, opacities, radii.to(torch.int32), depths,
                         int(width), int(height))
