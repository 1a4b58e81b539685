"""avatar.ops.hashgrid: 2D multi-resolution hash-grid encoding (HashTriplane's lookup), forward and
backward, on the native extensions (cuda/include/avatar/hashgrid.h: avatar._C_cuda and its CPU twin
avatar._C_cpu) or in pure torch.

A level is (scale, resolution, rows, dense) as `avatar.model.triplane.level_layout` gives it; levels
occupy consecutive row ranges of one table (level l starts at sum of the previous levels' rows).
Per level: pos = uv * scale + 0.5, cell = floor(pos), bilinear blend of the 4 corner rows, a corner
(cx, cy) at row (cx + cy * res) % rows (dense) or ((cx ^ cy * 2654435761) mod 2^32) % rows (hashed).
Differentiable w.r.t. the tables and the coordinates (d/duv = scale * d/dfrac, cells held fixed).

Backends (like `rasterize`): "cuda" (CUDA float32 tensors), "cpu" (CPU float32), "torch" (any),
"auto" = the native one for the tensors' device when its extension is built, else "torch".
"""
from __future__ import annotations

import threading
import warnings
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from avatar.ops import _backends, _native
from avatar.ops._errors import FIX, BackendUnavailable

Level = Tuple[float, int, int, bool]      # (scale, resolution, rows, dense)
PRIME = 2654435761
BACKENDS = ("auto", "cuda", "cpu", "torch")
__all__ = ["hash_encode", "hash_encode_torch", "native_status", "resolve", "Level", "BACKENDS"]

_warned = set()
_lock = threading.Lock()


def native_status(device: torch.device) -> Tuple[bool, str]:
    """Whether our native hash-grid kernel can run on `device` here (loads the extension once)."""
    kind = "cuda" if torch.device(device).type == "cuda" else "cpu"
    if torch.device(device).type not in ("cuda", "cpu"):
        return False, f"no native hash-grid kernel for {device}"
    ok, why = _backends._status(kind)
    if not ok:
        return False, why
    try:
        mod = _native.load(kind)
    except BackendUnavailable as e:
        return False, str(e)
    if not hasattr(mod, "hashgrid_fwd"):
        return False, f"avatar._C_{kind} predates the hash-grid kernel; {FIX}"
    return True, f"avatar._C_{kind}"


def resolve(backend: str, like: Tensor) -> str:
    """The backend `hash_encode` uses for tensors like `like` ("cuda" | "cpu" | "torch")."""
    if backend not in BACKENDS:
        raise ValueError(f"hash_encode: `backend` must be one of {BACKENDS}, got {backend!r}")
    own = "cuda" if like.device.type == "cuda" else "cpu"
    if backend == "torch":
        return "torch"
    if backend == "auto":
        if like.device.type not in ("cuda", "cpu"):
            return "torch"
        ok, why = native_status(like.device)
        if ok:
            return own
        with _lock:
            if own not in _warned:
                _warned.add(own)
                warnings.warn(f"hash_encode: native {own!r} kernel unavailable ({why}); using the torch "
                              "reference", stacklevel=3)
        return "torch"
    if backend != own or like.device.type != backend:
        raise ValueError(f"hash_encode: backend {backend!r} needs {backend.upper()} tensors; got {like.device}")
    ok, why = native_status(like.device)
    if not ok:
        raise BackendUnavailable(f"hash_encode backend {backend!r} is unavailable: {why}")
    return backend


def _offsets(levels: Sequence[Level]) -> List[int]:
    out = [0]
    for _, _, size, _ in levels:
        out.append(out[-1] + int(size))
    return out


def hash_encode_torch(x: Tensor, tables: Tensor, levels: Sequence[Level]) -> Tensor:
    """Pure-torch reference, any device, autograd. x [N,P,2], tables [P,T,F] -> [N,P,L*F] (float32)."""
    N, P = x.shape[0], x.shape[1]
    offs = _offsets(levels)
    plane = torch.arange(P, device=x.device).view(1, P)
    out = []
    for lvl, (scale, res, size, dense) in enumerate(levels):
        pos = x.float() * scale + 0.5          # [N,P,2]
        g = torch.floor(pos)
        frac = pos - g
        g = g.long()
        acc = 0.0
        for dx in (0, 1):
            for dy in (0, 1):
                cx, cy = g[..., 0] + dx, g[..., 1] + dy
                idx = cx + cy * res if dense else (cx ^ (cy * PRIME)) & 0xFFFFFFFF
                idx = idx % size + offs[lvl]
                wx = frac[..., 0] if dx else 1.0 - frac[..., 0]
                wy = frac[..., 1] if dy else 1.0 - frac[..., 1]
                acc = acc + (wx * wy).unsqueeze(-1) * tables[plane, idx]
        out.append(acc)
    return torch.cat(out, dim=-1) if out else x.new_zeros(N, P, 0)


class _HashEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, C, x, tables, meta):
        x_, t_ = x.detach().contiguous(), tables.detach().contiguous()
        ctx.C, ctx.meta = C, meta
        ctx.save_for_backward(x_, t_)
        return C.hashgrid_fwd(x_, t_, *meta)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x_, t_ = ctx.saved_tensors
        g_tables, g_x = ctx.C.hashgrid_bwd(x_, t_, *ctx.meta, grad.contiguous(), bool(ctx.needs_input_grad[1]))
        return None, g_x, (g_tables if ctx.needs_input_grad[2] else None), None


def hash_encode(x: Tensor, tables: Tensor, levels: Sequence[Level], backend: str = "auto") -> Tensor:
    """Encode points with 2D multi-resolution hash grids.

    x [N,2] with tables [T,F] -> [N, L*F]; or P planes at once: x [N,P,2] with tables [P,T,F] ->
    [N,P,L*F] (plane p of every point reads tables[p]). x is expected in [0,1] (outside it the
    lookup wraps like the reference). Levels concatenated in order, F features each. Native
    backends compute in float32 (x is cast; tables must be float32); "torch" returns float32 too.
    """
    single = x.dim() == 2
    if single:
        if tables.dim() != 2:
            raise ValueError(f"hash_encode: x [N,2] needs tables [T,F], got {tuple(tables.shape)}")
        x, tables = x.unsqueeze(1), tables.unsqueeze(0)
    if x.dim() != 3 or x.shape[-1] != 2 or tables.dim() != 3 or tables.shape[0] != x.shape[1]:
        raise ValueError(f"hash_encode: want x [N,P,2] and tables [P,T,F], got {tuple(x.shape)} and "
                         f"{tuple(tables.shape)}")
    offs = _offsets(levels)
    if offs[-1] > tables.shape[1]:
        raise ValueError(f"hash_encode: levels need {offs[-1]} table rows, tables have {tables.shape[1]}")
    name = resolve(backend, tables)
    if name != "torch" and tables.dtype != torch.float32:
        if backend != "auto":
            raise ValueError(f"hash_encode: backend {backend!r} needs float32 tables, got {tables.dtype}")
        name = "torch"
    if name == "torch":
        out = hash_encode_torch(x, tables, levels)
    else:
        meta = ([float(s) for s, _, _, _ in levels], [int(r) for _, r, _, _ in levels],
                [int(z) for _, _, z, _ in levels], offs[:-1], [int(bool(d)) for _, _, _, d in levels])
        out = _HashEncode.apply(_native.load(name), x.to(tables.device, torch.float32), tables, meta)
    return out[:, 0] if single else out
