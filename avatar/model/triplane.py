"""HashTriplane: three 2D multi-resolution hash grids (xy, yz, xz) with bilinear lookup.

The `torch` implementation is the reference (any device). Its grid follows tiny-cuda-nn's "HashGrid"
encoding exactly (level scale = base * per_level_scale^l - 1, position offset +0.5, dense storage when a
level's grid fits in the table, otherwise the spatial hash x*1 ^ y*2654435761, tables padded to a multiple
of 8), so the `tcnn` implementation (tinycudann, CUDA only, import-guarded) computes the same function from
the same parameters; `tests/test_model_triplane.py` compares the two where tinycudann exists.
The `native` implementation runs our own kernel (avatar.ops.hashgrid: avatar._C_cuda on CUDA, its
CPU twin avatar._C_cpu on CPU; all three planes in one call), equal to `torch` to float tolerance
(`tests/test_hashgrid.py`). `auto` picks, per call and device: native when the extension for the
tensor's device is built, else tcnn (CUDA, when importable), else torch.
"""
from __future__ import annotations

import math
from typing import List, Tuple

import torch
from torch import nn

from avatar.model.config import TriplaneConfig
from avatar.ops import hashgrid

PLANES: Tuple[Tuple[int, int], ...] = ((0, 1), (1, 2), (0, 2))  # xy, yz, xz
_PRIME = 2654435761


def level_layout(cfg: TriplaneConfig) -> List[Tuple[float, int, int, bool]]:
    """Per level: (scale, resolution, table size, dense?) — tiny-cuda-nn's 2D grid layout."""
    out = []
    hashmap = 2 ** cfg.log2_hashmap_size
    for lvl in range(cfg.n_levels):
        scale = math.exp2(lvl * math.log2(cfg.per_level_scale)) * cfg.base_resolution - 1.0
        res = int(math.ceil(scale)) + 1
        dense_size = res * res
        size = min(hashmap, (dense_size + 7) // 8 * 8)
        out.append((scale, res, size, dense_size <= size))
    return out


def tcnn_available() -> Tuple[bool, str]:
    """Whether the tinycudann implementation can be used here, and why not."""
    if not torch.cuda.is_available():
        return False, "tinycudann needs a CUDA GPU"
    try:
        import tinycudann  # noqa: F401
    except Exception as e:  # tinycudann raises various errors at import without a matching GPU/driver
        return False, f"tinycudann not importable ({type(e).__name__}: {e}); install it from its git repo"
    return True, ""


class HashTriplane(nn.Module):
    """Feature field f(x) for points x [N, 3] in the head frame -> [N, out_dim].

    Points are mapped to [0,1]^3 by `cfg.bound` (clamped), projected onto the xy, yz and xz planes, each
    encoded by a 2D multi-resolution hash grid; per plane the levels are concatenated, and the planes are
    concatenated (out_dim = 3*L*F) or summed (out_dim = L*F).
    """

    def __init__(self, cfg: TriplaneConfig):
        super().__init__()
        self.cfg = cfg
        self.layout = level_layout(cfg)
        sizes = [s for _, _, s, _ in self.layout]
        self.offsets = [0]
        for s in sizes:
            self.offsets.append(self.offsets[-1] + s)
        F = cfg.n_features_per_level
        # [3 planes, total entries, F]
        self.tables = nn.Parameter(torch.empty(3, self.offsets[-1], F).uniform_(-cfg.init_range, cfg.init_range))
        self.register_buffer("lo", torch.tensor(cfg.bound[:3], dtype=torch.float32), persistent=False)
        self.register_buffer("hi", torch.tensor(cfg.bound[3:], dtype=torch.float32), persistent=False)
        impl = cfg.impl
        if impl not in ("torch", "tcnn", "native", "auto"):
            raise ValueError(f"HashTriplane impl must be torch|tcnn|native|auto, got {impl!r}")
        if impl == "auto":   # resolved for the parameters' device now, and again on each call's device
            impl = self._auto_impl(torch.device("cpu"))
        if impl == "tcnn":
            ok, why = tcnn_available()
            if not ok:
                raise RuntimeError(f"HashTriplane impl='tcnn' unavailable: {why}. Use impl='torch'.")
        self.impl = impl
        self._tcnn = None

    @staticmethod
    def _auto_impl(device: torch.device) -> str:
        """auto: our native kernel when built for `device`, else tcnn (CUDA), else torch."""
        if hashgrid.native_status(device)[0]:
            return "native"
        if device.type == "cuda" and tcnn_available()[0]:
            return "tcnn"
        return "torch"

    def impl_for(self, device: torch.device) -> str:
        """The implementation a forward on `device` uses."""
        if self.cfg.impl == "auto":
            return self._auto_impl(torch.device(device))
        if self.impl == "native":
            ok, why = hashgrid.native_status(torch.device(device))
            if not ok:
                raise RuntimeError(f"HashTriplane impl='native' unavailable on {device}: {why}. "
                                   "Use impl='torch'.")
        return self.impl

    @property
    def out_dim(self) -> int:
        per_plane = self.cfg.n_levels * self.cfg.n_features_per_level
        return per_plane * (3 if self.cfg.combine == "concat" else 1)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """x [N,3] metres -> [N,3] in [0,1]."""
        return ((x - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [N, 3] -> [N, out_dim]
        u = self.normalize(x)
        impl = self.impl_for(self.tables.device)
        if impl == "native":
            # all planes in one kernel call: [N,3,2] -> [N,3,L*F] (plane-major, like the concat below)
            uv = u.float()[:, [list(ab) for ab in PLANES]]
            out = hashgrid.hash_encode(uv, self.tables, self.layout,
                                       backend="cuda" if self.tables.is_cuda else "cpu")
            if self.cfg.combine == "sum":
                return out[:, 0] + out[:, 1] + out[:, 2]
            return out.reshape(out.shape[0], -1)
        if impl == "tcnn":
            feats = self._forward_tcnn(u)
        else:
            feats = [self.encode_plane(u[:, list(ab)], p) for p, ab in enumerate(PLANES)]
        if self.cfg.combine == "sum":
            return feats[0] + feats[1] + feats[2]
        return torch.cat(feats, dim=-1)

    def encode_plane(self, uv: torch.Tensor, plane: int) -> torch.Tensor:
        """Reference 2D multi-res grid lookup. uv [N,2] in [0,1] -> [N, L*F] (torch, autograd)."""
        N = uv.shape[0]
        table = self.tables[plane]  # [total, F]
        out = []
        for lvl, (scale, res, size, dense) in enumerate(self.layout):
            pos = uv.float() * scale + 0.5  # [N,2]
            g = torch.floor(pos)
            frac = pos - g
            g = g.long()
            acc = 0.0
            for dx in (0, 1):
                for dy in (0, 1):
                    cx, cy = g[:, 0] + dx, g[:, 1] + dy
                    if dense:
                        idx = cx + cy * res
                    else:
                        idx = (cx ^ (cy * _PRIME)) & 0xFFFFFFFF
                    idx = idx % size + self.offsets[lvl]
                    wx = frac[:, 0] if dx else 1.0 - frac[:, 0]
                    wy = frac[:, 1] if dy else 1.0 - frac[:, 1]
                    acc = acc + (wx * wy).unsqueeze(-1) * table[idx]
            out.append(acc)
        return torch.cat(out, dim=-1) if out else uv.new_zeros(N, 0)

    def _forward_tcnn(self, u: torch.Tensor) -> List[torch.Tensor]:
        import tinycudann as tcnn

        c = self.cfg
        if self._tcnn is None:
            enc_cfg = {"otype": "HashGrid", "n_levels": c.n_levels, "n_features_per_level": c.n_features_per_level,
                       "log2_hashmap_size": c.log2_hashmap_size, "base_resolution": c.base_resolution,
                       "per_level_scale": c.per_level_scale, "interpolation": "Linear"}
            self._tcnn = [tcnn.Encoding(2, enc_cfg, dtype=torch.float32) for _ in range(3)]
        feats = []
        for p, ab in enumerate(PLANES):
            enc = self._tcnn[p]
            n = enc.params.numel()
            # share our parameter: tcnn's flat layout is [entries, F] level after level, like ours
            enc.params.data = self.tables[p].reshape(-1)[:n].contiguous()
            feats.append(_TcnnShared.apply(u[:, list(ab)].contiguous(), self.tables, p, enc).float())
        return feats


class _TcnnShared(torch.autograd.Function):
    """Run a tcnn encoding with our table's values; route its parameter gradient back to our table."""

    @staticmethod
    def forward(ctx, uv, tables, plane, enc):
        ctx.enc, ctx.plane = enc, plane
        with torch.enable_grad():
            p = enc.params
            p.grad = None
            uv_ = uv.detach().requires_grad_(uv.requires_grad)
            out = enc(uv_)
        ctx.save_for_backward(uv_, out)
        ctx.shape = tables.shape
        return out.detach()

    @staticmethod
    def backward(ctx, grad):
        uv_, out = ctx.saved_tensors
        enc = ctx.enc
        enc.params.grad = None
        g_uv = None
        inputs = [enc.params] + ([uv_] if uv_.requires_grad else [])
        grads = torch.autograd.grad(out, inputs, grad.to(out.dtype), allow_unused=True)
        g_tab = torch.zeros(ctx.shape, device=grad.device, dtype=grad.dtype)
        gp = grads[0]
        if gp is not None:
            g_tab[ctx.plane].view(-1)[: gp.numel()] = gp.to(grad.dtype)
        if uv_.requires_grad:
            g_uv = grads[1]
        return g_uv, g_tab, None, None
