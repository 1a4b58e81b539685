"""Autograd Functions over a native rasterizer extension (avatar._C_cpu or avatar._C_cuda: both
expose project_fwd/bwd, sh_fwd/bwd, raster_fwd/bwd with the same signatures). The hand-written
backward kernels are called from here. `Ops(kind)` has the primitives and signatures of
avatar.ops._torch_impl (project, sh_colors, rasterize_pixels); native backends take float32."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from avatar.ops import _native


def _c(t: Tensor) -> Tensor:
    return t.detach().contiguous()


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, C, means, quats, scales, opacities, viewmats, Ks, settings):
        args = [_c(t) for t in (means, quats, scales, opacities, viewmats, Ks)]
        means2d, conics, depths, radii, opac = C.project_fwd(*args, *settings)
        ctx.C = C
        ctx.save_for_backward(*args)
        ctx.settings = settings
        ctx.mark_non_differentiable(radii)
        return means2d, conics, depths, radii, opac

    @staticmethod
    def backward(ctx, v_means2d, v_conics, v_depths, v_radii, v_opac):
        args = ctx.saved_tensors
        B, N, C = args[0].shape[0], args[0].shape[1], args[4].shape[1]
        z = args[0].new_zeros
        gm = _c(v_means2d) if v_means2d is not None else z(B, C, N, 2)
        gc = _c(v_conics) if v_conics is not None else z(B, C, N, 3)
        gd = _c(v_depths) if v_depths is not None else z(B, C, N)
        go = _c(v_opac) if v_opac is not None else z(B, C, N)
        camera_grad = ctx.needs_input_grad[5]       # viewmats: skipped in the kernels when not wanted
        v_means, v_quats, v_scales, v_opacities, v_viewmats = ctx.C.project_bwd(
            *args, *ctx.settings, gm, gc, gd, go, camera_grad)
        return None, v_means, v_quats, v_scales, v_opacities, v_viewmats, None, None


class _SH(torch.autograd.Function):
    @staticmethod
    def forward(ctx, C, degree, coeffs, means, viewmats):
        args = [_c(coeffs), _c(means), _c(viewmats)]
        ctx.save_for_backward(*args)
        ctx.degree, ctx.C = degree, C
        return C.sh_fwd(degree, *args)

    @staticmethod
    def backward(ctx, v_colors):
        v_coeffs, v_means, v_viewmats = ctx.C.sh_bwd(ctx.degree, *ctx.saved_tensors, _c(v_colors),
                                                     ctx.needs_input_grad[4])
        return None, None, v_coeffs, v_means, v_viewmats


class _Raster(torch.autograd.Function):
    @staticmethod
    def forward(ctx, C, means2d, conics, features, opacities, radii, depths, width, height):
        args = [_c(t) for t in (means2d, conics, features, opacities)]
        ctx.C = C
        render, alphas, last, offsets, ids = C.raster_fwd(*args, _c(radii), _c(depths), width, height)
        ctx.save_for_backward(*args, offsets, ids, alphas, last)
        ctx.size = (width, height)
        return render, alphas

    @staticmethod
    def backward(ctx, v_render, v_alphas):
        means2d, conics, features, opacities, offsets, ids, alphas, last = ctx.saved_tensors
        v_render = torch.zeros_like(alphas.expand(-1, -1, -1, features.shape[-1])) if v_render is None else v_render
        v_alphas = torch.zeros_like(alphas) if v_alphas is None else v_alphas
        g = ctx.C.raster_bwd(means2d, conics, features, opacities, offsets, ids, alphas, last,
                            _c(v_render), _c(v_alphas), *ctx.size)
        return None, g[0], g[1], g[2], g[3], None, None, None, None


class Ops:
    """The three primitives of a native backend ("cpu" | "cuda"); the extension loads on first call."""

    def __init__(self, kind: str):
        self.kind = kind

    @property
    def C(self):
        return _native.load(self.kind)

    def project(self, means, quats, scales, opacities, viewmats, Ks, width, height, near, far, eps2d,
                antialiased):
        """Same contract as _torch_impl.project (viewmats get gradients, only when they require
        them; Ks do not). radii [B,C,N,2] int32."""
        settings = (int(width), int(height), float(near), float(far), float(eps2d), bool(antialiased))
        return _Project.apply(self.C, means, quats, scales, opacities, viewmats, Ks, settings)

    def sh_colors(self, sh_degree: int, coeffs: Tensor, means: Tensor, viewmats: Tensor) -> Tensor:
        """coeffs [B,N,K,3], means [B,N,3], viewmats [B,C,4,4] -> colors [B,C,N,3]."""
        return _SH.apply(self.C, int(sh_degree), coeffs, means, viewmats)

    def rasterize_pixels(self, means2d: Tensor, conics: Tensor, features: Tensor, opacities: Tensor,
                         radii: Tensor, depths: Tensor, width: int, height: int) -> Tuple[Tensor, Tensor]:
        """Same contract as _torch_impl.rasterize_pixels: [I,N,...] (radii [I,N,2]) -> render [I,H,W,D],
        alphas [I,H,W,1]."""
        return _Raster.apply(self.C, means2d, conics, features, opacities, radii.to(torch.int32), depths,
                             int(width), int(height))
