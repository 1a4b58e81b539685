"""The trainer's image terms and its held-out evaluation.

* psnr_from_mse / ssim / ssim_map: differentiable torch terms of the training loss and its logged PSNR.
* render_heldout / evaluate: render the held-out frames and score them with avatar.eval, the one metrics
  module (the same protocol as `avatar eval`); mouth_psnr adds the mouth box (outer-lip landmarks + 25 %
  of the mouth width each side) for `avatar bench train`'s static-vs-deformation gain.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch

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


def render_heldout(model, data, indices: Sequence[int], use_deform: bool = True, backend: str = "auto"):
    """Render frames `indices` of `data` (FrameData) self-driven with their tracked motion codes, audio and
    blinks -> (pred uint8 [T,h,w,3], gt uint8 [T,h,w,3], masks uint8 [T,h,w], seconds spent rendering)."""
    import time

    was_training = model.training
    model.eval()
    dev = model.gaussians.means.device
    pred = []
    t0 = time.perf_counter()
    for i in indices:
        if use_deform:
            motion = data.motion[i].to(dev) if data.motion is not None else None
            rgb, _ = model.render_frame(data.viewmats[i:i + 1], data.Ks[i:i + 1], data.width, data.height,
                                        audio_window=data.audio[i], motion=motion, blink=float(data.blink[i]),
                                        background=data.background, backend=backend)
        else:  # static baseline: the canonical avatar
            rgb = _render_static(model, data, i, backend)[0]
        pred.append((rgb[0].cpu().numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8))
    seconds = time.perf_counter() - t0
    model.train(was_training)
    idx = torch.as_tensor(np.asarray(indices, np.int64))
    return np.stack(pred), data.images[idx].numpy(), data.masks[idx].numpy(), seconds


def evaluate(model, data, indices: Optional[Sequence[int]] = None, use_deform: bool = True,
             backend: str = "auto", make_detector=None, audio: Optional[np.ndarray] = None) -> Dict:
    """Held-out metrics of `model` on frames `indices` (default: the test split) of `data` (FrameData),
    measured by avatar.eval (the same protocol as `avatar eval`): PSNR/SSIM (full and face), LMD and
    mouth-opening metrics from landmarks detected on the rendered frames when `make_detector` is given
    (the CLI passes capture's mediapipe), audio sync when `audio` (the frames' own, [S] 16 kHz) is given.
    Plus mouth_psnr (the mouth box) for the static-vs-deformation mouth gain of `avatar bench train`.

    Returns a flat dict: avatar.eval summary keys, "notes" (why a metric is None), "num_frames", "frames",
    "mouth_opening" {"gt", "pred"} per frame, "images" (three (pred, gt) float pairs for sheets)."""
    from avatar.eval.image import psnr
    from avatar.eval.protocol import analyse_reference, score_frames

    idx = [int(i) for i in (data.test_idx if indices is None else indices)]
    pred, gt, masks, seconds = render_heldout(model, data, idx, use_deform, backend)
    ref = analyse_reference(gt, data.fps, make_detector, audio=audio, face_masks=masks)
    T = len(idx)
    keep = sorted({0, T // 2, T - 1}) if T else []
    res = score_frames(pred, ref, make_detector, timing={"fps": T / max(seconds, 1e-9),
                                                         "latency_ms": 1000.0 * seconds / max(T, 1)}, keep=keep)
    mouth = []
    for n, i in enumerate(idx):
        x0, y0, x1, y1 = [int(v) for v in data.mouth_boxes[i]]
        if x1 > x0 and y1 > y0:
            mouth.append(psnr(pred[n, y0:y1, x0:x1], gt[n, y0:y1, x0:x1]))
    out = dict(res["summary"])
    out.update(num_frames=T, frames=idx, notes=res["notes"],
               mouth_psnr=float(np.mean(mouth)) if mouth else None,
               mouth_opening={"gt": ref.result["per_frame"]["mouth_opening"],
                              "pred": res["per_frame"]["mouth_opening"]},
               images=[(p.astype(np.float32) / 255.0, g.astype(np.float32) / 255.0)
                       for _, g, p in res.get("images", [])])
    return out


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
