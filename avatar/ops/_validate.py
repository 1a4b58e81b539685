"""Input checks for avatar.ops.rasterize: every error names the argument and the expected shape."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
RASTERIZE_MODES = ("classic", "antialiased")


@dataclass(frozen=True)
class Checked:
    """Shapes resolved from validated inputs."""
    batch: Tuple[int, ...]
    N: int
    C: int
    D: int          # colour channels before render-mode depth channels (3 for SH)
    sh_degree: Optional[int]


def _shape(t: Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def _want(name: str, t, expected: str) -> None:
    got = _shape(t) if isinstance(t, Tensor) else type(t).__name__
    raise ValueError(f"rasterize: `{name}` must have shape {expected}, got {got}")


def check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, *,
                 near_plane, far_plane, sh_degree, backgrounds, render_mode, eps2d,
                 rasterize_mode, check_finite: bool = True) -> Checked:
    named = {"means": means, "quats": quats, "scales": scales, "opacities": opacities,
             "colors": colors, "viewmats": viewmats, "Ks": Ks}
    if backgrounds is not None:
        named["backgrounds"] = backgrounds
    for name, t in named.items():
        if not isinstance(t, Tensor):
            raise ValueError(f"rasterize: `{name}` must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"rasterize: `{name}` must be float32 or float64, got {t.dtype}")
    dt, dev = means.dtype, means.device
    for name, t in named.items():
        if t.dtype != dt:
            raise ValueError(f"rasterize: `{name}` has dtype {t.dtype} but `means` has {dt}; "
                             "all tensors must share one dtype")
        if t.device != dev:
            raise ValueError(f"rasterize: `{name}` is on {t.device} but `means` is on {dev}; "
                             "all tensors must be on one device")
    if not isinstance(width, int) or isinstance(width, bool) or width <= 0:
        raise ValueError(f"rasterize: `width` must be a positive int, got {width!r}")
    if not isinstance(height, int) or isinstance(height, bool) or height <= 0:
        raise ValueError(f"rasterize: `height` must be a positive int, got {height!r}")
    if render_mode not in RENDER_MODES:
        raise ValueError(f"rasterize: `render_mode` must be one of {RENDER_MODES}, got {render_mode!r}")
    if rasterize_mode not in RASTERIZE_MODES:
        raise ValueError(f"rasterize: `rasterize_mode` must be one of {RASTERIZE_MODES}, "
                         f"got {rasterize_mode!r}")
    if not (float(near_plane) > 0 and float(far_plane) > float(near_plane)):
        raise ValueError(f"rasterize: need 0 < `near_plane` < `far_plane`, got {near_plane}, {far_plane}")
    if not float(eps2d) >= 0:
        raise ValueError(f"rasterize: `eps2d` must be >= 0, got {eps2d}")

    if means.dim() < 2 or means.shape[-1] != 3:
        _want("means", means, "[..., N, 3]")
    batch = tuple(means.shape[:-2])
    N = means.shape[-2]
    b = "".join(f"{s}, " for s in batch)
    if tuple(quats.shape) != batch + (N, 4):
        _want("quats", quats, f"[{b}{N}, 4] (batch dims and N of `means`)")
    if tuple(scales.shape) != batch + (N, 3):
        _want("scales", scales, f"[{b}{N}, 3]")
    if tuple(opacities.shape) != batch + (N,):
        _want("opacities", opacities, f"[{b}{N}]")
    if sh_degree is None:
        if colors.dim() != len(batch) + 2 or tuple(colors.shape[:-1]) != batch + (N,) or colors.shape[-1] < 1:
            _want("colors", colors, f"[{b}{N}, D] (or SH [{b}{N}, K, 3] with sh_degree set)")
        D = colors.shape[-1]
    else:
        if not isinstance(sh_degree, int) or not 0 <= sh_degree <= 3:
            raise ValueError(f"rasterize: `sh_degree` must be an int in 0..3 or None, got {sh_degree!r}")
        K = (sh_degree + 1) ** 2
        if (colors.dim() != len(batch) + 3 or tuple(colors.shape[:-2]) != batch + (N,)
                or colors.shape[-1] != 3 or colors.shape[-2] < K):
            _want("colors", colors, f"[{b}{N}, K, 3] with K >= {K} for sh_degree={sh_degree}")
        D = 3
    if viewmats.dim() != len(batch) + 3 or tuple(viewmats.shape[:-3]) != batch or tuple(viewmats.shape[-2:]) != (4, 4):
        _want("viewmats", viewmats, f"[{b}C, 4, 4]")
    C = viewmats.shape[-3]
    if C < 1:
        _want("viewmats", viewmats, f"[{b}C, 4, 4] with C >= 1")
    if tuple(Ks.shape) != batch + (C, 3, 3):
        _want("Ks", Ks, f"[{b}{C}, 3, 3] (C of `viewmats`)")
    if backgrounds is not None:
        if render_mode in ("D", "ED"):
            raise ValueError(f"rasterize: `backgrounds` is only for colour render modes, "
                             f"not render_mode={render_mode!r}")
        if tuple(backgrounds.shape) != batch + (C, D):
            _want("backgrounds", backgrounds, f"[{b}{C}, {D}] (one colour per camera)")

    if check_finite:
        for name, t in named.items():
            if t.numel() and not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).sum())
                raise ValueError(f"rasterize: `{name}` contains {bad} non-finite value(s) (NaN/inf); "
                                 "refusing to render them")
        if scales.numel() and bool((scales < 0).any()):
            raise ValueError("rasterize: `scales` must be linear scales >= 0 (got negative values; "
                             "pass exp(log_scales))")
        if opacities.numel() and bool(((opacities < 0) | (opacities > 1)).any()):
            raise ValueError("rasterize: `opacities` must lie in [0, 1] (pass sigmoid(logits))")
        Kf = Ks[..., 0, 0], Ks[..., 1, 1]
        if Ks.numel() and bool(((Kf[0] <= 0) | (Kf[1] <= 0)).any()):
            raise ValueError("rasterize: `Ks` focal lengths fx=K[0,0], fy=K[1,1] must be > 0")
    return Checked(batch=batch, N=N, C=C, D=D, sh_degree=sh_degree)
