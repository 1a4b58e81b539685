"""Speaker augmentation of the prior's audio features during training (no effect at inference).

The pool has ~30 training voices, so the prior can learn a voice rather than speech. Two standard
feature-level perturbations make every training window sound like another speaker or microphone:
* vocal-tract-length perturbation (Jaitly & Hinton 2013): the mel axis is warped by a factor
  exp(U(-w, w)), moving the formants as a shorter or longer vocal tract would;
* frequency masking (SpecAugment, Park et al. 2019): one block of up to `m` adjacent mel bands is
  set to the clip mean (0 in the clip-normalised features), so no single band can be relied on.
Both act on the clip-normalised log-mel (avatar.prior.data.normalise_clip_features) and are drawn
from the sample's own seed, so a batch is a function of (seed, step) and a resume is exact.
"""
from __future__ import annotations

import torch


def _lerp(x: torch.Tensor, pos: torch.Tensor, dim: int) -> torch.Tensor:
    """x sampled at fractional indices pos [P] (within [0, n - 1]) along `dim` by linear interpolation."""
    n = x.shape[dim]
    lo = pos.floor().long().clamp(max=n - 1)
    hi = (lo + 1).clamp(max=n - 1)
    shape = [1] * x.ndim
    shape[dim] = len(pos)
    frac = (pos - lo.float()).to(x.dtype if x.dtype.is_floating_point else torch.float32).reshape(shape)
    return x.index_select(dim, lo) * (1 - frac) + x.index_select(dim, hi) * frac


def warp_mel(feats: torch.Tensor, factor: float) -> torch.Tensor:
    """feats [T, D] log-mel -> [T, D] with the mel axis stretched by `factor` (> 1 moves content to
    higher bands, as a shorter vocal tract): band f takes the linear interpolation at f / factor,
    clamped to the edge bands."""
    d = feats.shape[-1]
    return _lerp(feats, (torch.arange(d, dtype=torch.float32) / factor).clamp(0, d - 1), feats.ndim - 1)


def augment_feats(feats: torch.Tensor, seed: int, warp: float, mask_bands: int) -> torch.Tensor:
    """One sample's features [T, D] perturbed as the module docstring says (warp: the largest
    log-factor of the mel warp, 0 = none; mask_bands: the widest masked block, 0 = none)."""
    if warp <= 0 and mask_bands <= 0:
        return feats
    g = torch.Generator().manual_seed(int(seed) ^ 0x5EED)
    u = torch.rand(3, generator=g)
    out = feats
    if warp > 0:
        out = warp_mel(out, float(torch.exp((u[0] * 2 - 1) * warp)))
    if mask_bands > 0:
        d = out.shape[-1]
        width = int(u[1] * (min(mask_bands, d - 1) + 1))
        if width > 0:
            start = int(u[2] * (d - width + 1))
            out = out.clone()
            out[..., start:start + width] = 0.0
    return out


def stretch_rate(seed: int, amount: float) -> float:
    """The speaking-rate factor exp(U(-amount, amount)) of one sample (1.0 when amount is 0)."""
    if amount <= 0:
        return 1.0
    g = torch.Generator().manual_seed(int(seed) ^ 0x7A7E)
    return float(torch.exp((torch.rand((), generator=g) * 2 - 1) * amount))


def resample_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    """x [L, ...] -> [frames, ...] by linear interpolation in time (first and last frames kept): a
    window of L source frames played back at the rate L / frames (speed perturbation of audio
    features and motion together, so faster speech moves the mouth faster)."""
    n = x.shape[0]
    if n == frames:
        return x
    return _lerp(x, torch.linspace(0, n - 1, frames), 0)
