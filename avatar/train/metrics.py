"""Held-out evaluation of a trained avatar: PSNR, SSIM (whole frame and face region), mouth-region error.

Face region = pixels labelled face skin or mouth interior (mask labels 2, 3); mouth region = the box around
the outer-lip landmarks (+25 % of the mouth width each side). LPIPS is reported only when the `lpips`
package and its weights are available locally (they are not on the reference machine): "lpips": null.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from avatar.data.schema import LABELS
from avatar.io.atomic import atomic_write_json


def psnr_from_mse(mse: float) -> float:
    return float(10.0 * math.log10(1.0 / max(mse, 1e-12)))


def _gauss_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def _blur_matrix(n: int, g: torch.Tensor) -> torch.Tensor:
    """[n, n] banded matrix M with (M @ v) = v convolved with g, zero padded (same size)."""
    k = g.numel()
    i = torch.arange(n)
    d = i[None, :] - i[:, None] + k // 2  # [n, n] tap index
    ok = (d >= 0) & (d < k)
    return torch.where(ok, g[d.clamp(0, k - 1)], torch.zeros((), dtype=g.dtype))


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with zero padding: x [B,H,W] -> [B,H,W] (= the 2D window), as two
    matrix products with banded matrices (much faster on CPU than 11-tap convolutions)."""
    H, W = x.shape[-2:]
    return _blur_matrix(H, g).to(x) @ x @ _blur_matrix(W, g).to(x).T


def ssim_map(a: torch.Tensor, b: torch.Tensor, size: int = 11) -> torch.Tensor:
    """SSIM (Wang et al. 2004, Gaussian 11x11 sigma 1.5, C1=0.01², C2=0.03²) per pixel.

    a, b [..., H, W, 3] in [0,1] -> [..., H, W] (mean over channels; zero padding like 3DGS's loss)."""
    shp = a.shape[:-3]
    H, W = a.shape[-3], a.shape[-2]
    x = a.reshape(-1, H, W, 3).permute(0, 3, 1, 2).reshape(-1, H, W)
    y = b.reshape(-1, H, W, 3).permute(0, 3, 1, 2).reshape(-1, H, W)
    g = _gauss_1d(size).to(a)
    n = x.shape[0]
    # one batched blur for the five moments
    m = _blur(torch.cat([x, y, x * x, y * y, x * y]), g)
    mu_x, mu_y, exx, eyy, exy = m.split(n)
    sxx, syy, sxy = exx - mu_x ** 2, eyy - mu_y ** 2, exy - mu_x * mu_y
    C1, C2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_x * mu_y + C1) * (2 * sxy + C2)) / ((mu_x ** 2 + mu_y ** 2 + C1) * (sxx + syy + C2))
    return s.reshape(-1, 3, H, W).mean(1).reshape(shp + (H, W))


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of [..., H, W, 3] images."""
    return ssim_map(a, b).mean()


def _pearson(x: np.ndarray, y: np.ndarray) -> Optional[float]:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.std(x[ok]) < 1e-12 or np.std(y[ok]) < 1e-12:
        return None
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


@torch.no_grad()
def evaluate(model, data, indices: Optional[Sequence[int]] = None, use_deform: bool = True,
             backend: str = "auto", keep_images: int = 0) -> Dict:
    """Metrics of `model` (AvatarModel) on frames `indices` (default: held-out split) of `data` (FrameData).

    Returns {"num_frames", "psnr", "ssim", "psnr_face", "ssim_face", "mouth_psnr", "mouth_l1", "lpips",
    "mouth_coverage" [per frame visible inside-mouth pixels/mouth-box area], "mouth_corr" (vs tracks'
    mouth_open, null if absent), "frames" (indices), "images" (first keep_images (pred, gt) pairs)}.
    """
    was_training = model.training
    model.eval()
    idx = list(data.test_idx if indices is None else indices)
    dev = model.gaussians.means.device
    sums = {"mse": 0.0, "ssim": 0.0, "mse_face": 0.0, "n_face": 0.0, "ssim_face": 0.0, "mouth_mse": 0.0,
            "mouth_l1": 0.0, "mouth_n": 0.0}
    coverage, images, per_psnr = [], [], []
    for i in idx:
        motion = data.motion[i].to(dev) if data.motion is not None else None
        if use_deform:
            rgb, _, mouth_a = model.render_frame(data.viewmats[i:i + 1], data.Ks[i:i + 1], data.width,
                                                 data.height, audio_window=data.audio[i], motion=motion,
                                                 blink=float(data.blink[i]), background=data.background,
                                                 backend=backend, return_mouth=True)
        else:  # static baseline: the canonical avatar
            rgb, _, mouth_a = _render_static(model, data, i, backend)
        pred = rgb[0].cpu()
        gt = data.image(i)
        err = (pred - gt) ** 2  # [h,w,3]
        mse = float(err.mean())
        per_psnr.append(psnr_from_mse(mse))
        sums["mse"] += mse
        smap = ssim_map(pred, gt)
        sums["ssim"] += float(smap.mean())
        face = (data.masks[i] == LABELS["face"]) | (data.masks[i] == LABELS["mouth"])
        nf = float(face.sum())
        if nf > 0:
            sums["mse_face"] += float(err.mean(-1)[face].mean())
            sums["ssim_face"] += float(smap[face].mean())
            sums["n_face"] += 1
        x0, y0, x1, y1 = [int(v) for v in data.mouth_boxes[i]]
        crop_e = err[y0:y1, x0:x1]
        if crop_e.numel():
            sums["mouth_mse"] += float(crop_e.mean())
            sums["mouth_l1"] += float((pred - gt)[y0:y1, x0:x1].abs().mean())
            sums["mouth_n"] += 1
            coverage.append(float(mouth_a[0, y0:y1, x0:x1].mean()))
        else:
            coverage.append(float("nan"))
        if len(images) < keep_images:
            images.append((pred.numpy(), gt.numpy()))
    model.train(was_training)
    n = max(1, len(idx))
    nf = max(1.0, sums["n_face"])
    nm = max(1.0, sums["mouth_n"])
    cov = np.asarray(coverage, np.float64)
    gt_open = np.asarray(data.mouth_open, np.float64)[idx] if len(idx) else np.zeros(0)
    return {
        "num_frames": len(idx),
        "psnr": psnr_from_mse(sums["mse"] / n),
        "psnr_mean_of_frames": float(np.mean(per_psnr)) if per_psnr else None,
        "ssim": sums["ssim"] / n,
        "psnr_face": psnr_from_mse(sums["mse_face"] / nf) if sums["n_face"] else None,
        "ssim_face": sums["ssim_face"] / nf if sums["n_face"] else None,
        "mouth_psnr": psnr_from_mse(sums["mouth_mse"] / nm),
        "mouth_l1": sums["mouth_l1"] / nm,
        "lpips": None,
        "mouth_coverage": [float(c) for c in cov],
        "mouth_corr": _pearson(cov, gt_open),
        "frames": [int(i) for i in idx],
        "images": images,
    }


def _render_static(model, data, i, backend):
    out = model.render(data.viewmats[i:i + 1], data.Ks[i:i + 1], data.width, data.height,
                       background=data.background, use_deform=False, backend=backend,
                       torso_transform=model.torso_transform_for(data.viewmats[i]))
    return out["rgb"].clamp(0, 1), out["alpha"], out["mouth_alpha"]


def write_json(obj: Dict, path) -> Path:
    """Atomic JSON write (images dropped)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in obj.items() if k != "images"}
    atomic_write_json(path, clean, indent=2)
    return path
