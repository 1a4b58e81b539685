"""Image metrics: PSNR and SSIM, whole frame and inside a region mask.

Images are uint8 or float in [0, 1], [H, W, 3] (one frame) or [T, H, W, 3]; they are compared in
float64 / float32 on the [0, 1] scale.

* PSNR = 10 log10(1 / MSE) over all pixels and channels; identical images give +inf, reported as
  `PSNR_CAP` (100 dB) by `psnr(..., cap=True)` so JSON stays finite.
* SSIM: Wang et al. 2004 with the 3DGS evaluation window: Gaussian 11x11, sigma 1.5, C1 = 0.01²,
  C2 = 0.03², zero padding at the border (as 3DGS's `ssim()` with `F.conv2d(padding=5)`; here a separable
  float64 blur), per channel, averaged over channels and pixels. `ssim_map` keeps the per-pixel map so a region's SSIM
  is the map's mean inside the region.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

PSNR_CAP = 100.0
"""dB reported for identical images (MSE = 0), the value a 1e-10 MSE would give."""


def as_float(img) -> np.ndarray:
    """uint8 (0..255) or float ([0, 1]) array -> float32 in [0, 1], same shape."""
    a = np.asarray(img)
    if a.dtype == np.uint8:
        return a.astype(np.float32) * np.float32(1.0 / 255.0)
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {a.dtype}")
    return a.astype(np.float32, copy=False)


def _check_pair(a: np.ndarray, b: np.ndarray, fn: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{fn}: images differ in shape {a.shape} vs {b.shape}")
    if a.ndim not in (3, 4) or a.shape[-1] != 3:
        raise ValueError(f"{fn}: expected [H, W, 3] or [T, H, W, 3] RGB, got shape {a.shape}")


def mse(a, b, mask: Optional[np.ndarray] = None) -> float:
    """Mean squared error on the [0, 1] scale; `mask` [H, W] or [T, H, W] bool restricts the pixels."""
    x, y = as_float(a), as_float(b)
    _check_pair(x, y, "mse")
    d = (x.astype(np.float64) - y) ** 2  # [..., H, W, 3]
    if mask is None:
        return float(d.mean())
    m = np.broadcast_to(np.asarray(mask, bool), d.shape[:-1])
    if not m.any():
        raise ValueError("mse: the mask selects no pixel")
    return float(d[m].mean())


def psnr_from_mse(m: float, cap: bool = True) -> float:
    """10 log10(1 / mse) dB; mse = 0 gives PSNR_CAP (cap=True) or +inf."""
    if m <= 0.0:
        return PSNR_CAP if cap else math.inf
    v = 10.0 * math.log10(1.0 / m)
    return float(min(v, PSNR_CAP) if cap else v)


def psnr(a, b, mask: Optional[np.ndarray] = None, cap: bool = True) -> float:
    """PSNR (dB) of images a vs b on [0, 1] (one MSE over all given pixels)."""
    return psnr_from_mse(mse(a, b, mask), cap)


def _gauss_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def ssim_map(a, b, size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Per-pixel SSIM (mean over the 3 channels): [H, W, 3] -> [H, W], [T, H, W, 3] -> [T, H, W]."""
    from scipy.ndimage import correlate1d

    x, y = as_float(a), as_float(b)
    _check_pair(x, y, "ssim")
    lead = x.shape[:-3]
    H, W = x.shape[-3:-1]
    x, y = x.reshape(-1, H, W, 3), y.reshape(-1, H, W, 3)
    g = _gauss_1d(size, sigma)

    def blur(t):  # separable Gaussian over H and W, zero outside the image (= conv2d(padding=size//2))
        t = correlate1d(t, g, axis=0, mode="constant", cval=0.0)
        return correlate1d(t, g, axis=1, mode="constant", cval=0.0)

    C1, C2 = 0.01 ** 2, 0.03 ** 2
    out = np.empty((len(x), H, W))
    for i in range(len(x)):  # one frame at a time keeps memory at a few frame copies
        p, q = x[i].astype(np.float64), y[i].astype(np.float64)
        mu_x, mu_y = blur(p), blur(q)
        sxx = blur(p * p) - mu_x ** 2
        syy = blur(q * q) - mu_y ** 2
        sxy = blur(p * q) - mu_x * mu_y
        s = ((2 * mu_x * mu_y + C1) * (2 * sxy + C2)) / ((mu_x ** 2 + mu_y ** 2 + C1) * (sxx + syy + C2))
        out[i] = s.mean(-1)
    return out.reshape(lead + (H, W))


def ssim(a, b, mask: Optional[np.ndarray] = None) -> float:
    """Mean SSIM of a vs b (3DGS window); `mask` [H, W] / [T, H, W] bool averages the map inside it."""
    m = ssim_map(a, b)
    if mask is None:
        return float(m.mean())
    k = np.broadcast_to(np.asarray(mask, bool), m.shape)
    if not k.any():
        raise ValueError("ssim: the mask selects no pixel")
    return float(m[k].mean())
