"""Densify / prune / opacity-reset policy (3DGS adaptive density control), ours rather than gsplat's.

Why ours: gsplat's DefaultStrategy resizes only the tensors it is given as parameters; our Gaussians also
carry non-trainable per-Gaussian tensors (region labels) and render in two layers (face, inside-mouth),
so the screen-space gradient statistics are gathered from several rasterizer calls. The policy follows
gsplat's conventions: the policy object is a dataclass, its running state comes from
`initialize_state()` and is passed back each step, and `densify`/`prune` resize every per-Gaussian tensor
(parameters, extras, Adam moments, the state) in lock-step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from avatar.data.cameras import quat_to_rotmat
from avatar.model.gaussians import Gaussians


@dataclass
class StrategyConfig:
    """Adaptive density control (3DGS, Kerbl et al. 2023, sec. 5.2)."""

    refine_start: int = 100
    """First step at which Gaussians are densified/pruned."""
    refine_stop: int = 1200
    """Last step at which Gaussians are densified (pruning of transparent ones continues to this step)."""
    refine_every: int = 100
    """Steps between densify/prune passes."""
    reset_every: int = 0
    """Steps between opacity resets (0 = never; short CPU runs do better without)."""
    grad_threshold: float = 0.0002
    """Mean screen-space positional gradient (NDC units, as gsplat) above which a Gaussian is densified."""
    scene_extent: float = 0.3
    """Scene size in metres (a head)."""
    grow_scale: float = 0.01
    """Gaussians larger than grow_scale*scene_extent are split, smaller ones cloned."""
    prune_opacity: float = 0.005
    """Gaussians below this opacity are pruned."""
    prune_scale: float = 0.1
    """Gaussians larger than prune_scale*scene_extent are pruned."""
    max_gaussians: int = 20000
    """Cap on the number of Gaussians (densification picks the largest gradients first)."""


class DensifyStrategy:
    """Stateless policy; the per-Gaussian statistics live in the dict from initialize_state()."""

    def __init__(self, cfg: StrategyConfig):
        self.cfg = cfg

    def initialize_state(self, n: int, device="cpu") -> Dict[str, torch.Tensor]:
        return {"grad2d": torch.zeros(n, device=device),  # [N] accumulated |d loss / d means2d| (NDC)
                "count": torch.zeros(n, device=device)}   # [N] times visible

    # ---- statistics -------------------------------------------------------------------------------
    def accumulate(self, state: Dict[str, torch.Tensor], views: Sequence[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                   width: int, height: int) -> None:
        """Add one step's statistics. views: (means2d [C,n,2] with .grad, radii [C,n] or [C,n,2], idx [n])."""
        for means2d, radii, idx in views:
            if means2d.grad is None:
                continue
            g = means2d.grad.detach().clone()  # [C,n,2] pixels -> NDC-like units as gsplat
            g[..., 0] *= width / 2.0
            g[..., 1] *= height / 2.0
            norm = g.norm(dim=-1)  # [C,n]
            r = radii if radii.ndim == 2 else radii.max(dim=-1).values
            vis = (r > 0)
            state["grad2d"].index_add_(0, idx, (norm * vis).sum(0))
            state["count"].index_add_(0, idx, vis.float().sum(0))

    def step(self, gaussians: Gaussians, optimizer: torch.optim.Optimizer, state: Dict[str, torch.Tensor],
             step: int, generator: Optional[torch.Generator] = None) -> Dict[str, int]:
        """Run the policy after the optimizer step `step` (1-based count of steps done)."""
        c = self.cfg
        out = {"cloned": 0, "split": 0, "pruned": 0}
        if c.refine_every > 0 and c.refine_start <= step <= c.refine_stop and step % c.refine_every == 0:
            out.update(self.densify_and_prune(gaussians, optimizer, state, generator))
            state["grad2d"].zero_()
            state["count"].zero_()
        if c.reset_every > 0 and step % c.reset_every == 0 and step <= c.refine_stop:
            reset_opacity(gaussians, optimizer, 2.0 * c.prune_opacity)
        return out

    def densify_and_prune(self, g: Gaussians, opt, state, generator=None) -> Dict[str, int]:
        c = self.cfg
        avg = state["grad2d"] / state["count"].clamp(min=1)
        scales = torch.exp(g.params["log_scales"].detach()).max(dim=-1).values
        big = scales > c.grow_scale * c.scene_extent
        cand = avg > c.grad_threshold
        room = max(0, c.max_gaussians - len(g))
        n_cand = int(cand.sum())
        if n_cand > room:  # keep the largest gradients; a split adds one net Gaussian, a clone one
            keep = torch.zeros_like(cand)
            if room > 0:
                keep[torch.topk(torch.where(cand, avg, torch.full_like(avg, -1.0)), room).indices] = True
            cand = cand & keep
        clone = cand & ~big
        split = cand & big
        n_clone, n_split = int(clone.sum()), int(split.sum())
        if n_clone:
            duplicate(g, opt, state, clone)
            split = torch.cat([split, torch.zeros(n_clone, dtype=torch.bool, device=split.device)])
        if n_split:
            split_gaussians(g, opt, state, split, generator)
        opac = torch.sigmoid(g.params["opacities"].detach())
        scales = torch.exp(g.params["log_scales"].detach()).max(dim=-1).values
        prune = (opac < c.prune_opacity) | (scales > c.prune_scale * c.scene_extent)
        n_prune = int(prune.sum())
        if n_prune and n_prune < len(g):
            remove(g, opt, state, prune)
        return {"cloned": n_clone, "split": n_split, "pruned": n_prune}


# ---- lock-step resizing ---------------------------------------------------------------------------
def _update(g: Gaussians, opt: Optional[torch.optim.Optimizer], state: Optional[Dict[str, torch.Tensor]],
            param_fn, moment_fn, other_fn) -> None:
    """Replace every per-Gaussian tensor: params by param_fn(name, p), Adam moments by moment_fn(v),
    extras and strategy state by other_fn(name, v)."""
    old = {name: p for name, p in g.params.items()}
    for name, p in old.items():
        new_p = nn.Parameter(param_fn(name, p.detach()), requires_grad=p.requires_grad)
        if opt is not None:
            for group in opt.param_groups:
                for i, q in enumerate(group["params"]):
                    if q is p:
                        group["params"][i] = new_p
                        st = opt.state.pop(p, None)
                        if st:
                            opt.state[new_p] = {k: (moment_fn(v) if torch.is_tensor(v) and v.ndim > 0
                                                    and v.shape[0] == p.shape[0] else v) for k, v in st.items()}
        g.params[name] = new_p
    for k, v in list(g.extras.items()):
        g.extras[k] = other_fn(k, v)
    if state is not None:
        for k, v in list(state.items()):
            if torch.is_tensor(v) and v.ndim > 0:
                state[k] = other_fn(k, v)


def duplicate(g: Gaussians, opt, state, mask: torch.Tensor) -> None:
    """Clone the Gaussians in mask [N] bool (appended at the end; moments of the copies start at 0)."""
    sel = mask.nonzero().squeeze(1)
    _update(g, opt, state,
            lambda n, p: torch.cat([p, p[sel]]),
            lambda v: torch.cat([v, torch.zeros_like(v[sel])]),
            lambda n, v: torch.cat([v, v[sel]]) if n not in ("grad2d", "count") else torch.cat([v, torch.zeros_like(v[sel])]))


def split_gaussians(g: Gaussians, opt, state, mask: torch.Tensor, generator=None) -> None:
    """Replace each masked Gaussian by 2 samples from it, scaled down by 1.6 (3DGS)."""
    sel = mask.nonzero().squeeze(1)
    rest = (~mask).nonzero().squeeze(1)
    p = g.params
    scales = torch.exp(p["log_scales"].detach()[sel])  # [S,3]
    q = nn.functional.normalize(p["quats"].detach()[sel], dim=-1)
    R = quat_to_rotmat(q)  # [S,3,3]
    noise = torch.randn(2, len(sel), 3, generator=generator, device=scales.device)
    offs = torch.einsum("sij,ksj->ksi", R, noise * scales)  # [2,S,3]

    def pf(name, v):
        if name == "means":
            new = (v[sel][None] + offs).reshape(-1, 3)
        elif name == "log_scales":
            new = (v[sel] - math.log(1.6)).repeat(2, 1)
        else:
            new = v[sel].repeat(2, *([1] * (v.ndim - 1)))
        return torch.cat([v[rest], new])

    def of(name, v):
        if name in ("grad2d", "count"):
            return torch.cat([v[rest], torch.zeros_like(v[sel]).repeat(2, *([1] * (v.ndim - 1)))])
        return torch.cat([v[rest], v[sel].repeat(2, *([1] * (v.ndim - 1)))])

    _update(g, opt, state, pf,
            lambda v: torch.cat([v[rest], torch.zeros_like(v[sel]).repeat(2, *([1] * (v.ndim - 1)))]), of)


def remove(g: Gaussians, opt, state, mask: torch.Tensor) -> None:
    """Delete the Gaussians in mask [N] bool."""
    keep = (~mask).nonzero().squeeze(1)
    _update(g, opt, state, lambda n, p: p[keep], lambda v: v[keep], lambda n, v: v[keep])


def reset_opacity(g: Gaussians, opt, value: float) -> None:
    """Clamp opacities to <= value and zero their Adam moments."""
    cap = math.log(value / (1 - value))

    def pf(name, p):
        return p.clamp(max=cap) if name == "opacities" else p

    old = g.params["opacities"]
    _update(g, opt, None, pf, lambda v: v, lambda n, v: v)
    if opt is not None:
        st = opt.state.get(g.params["opacities"])
        if st:
            for k, v in st.items():
                if torch.is_tensor(v) and v.ndim > 0:
                    st[k] = torch.zeros_like(v)
    del old
