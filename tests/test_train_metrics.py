"""Metrics used by the trainer and evaluation: SSIM (fast separable form vs the 2D-window definition), PSNR."""
import math

import torch
import torch.nn.functional as F

from avatar.train.metrics import _gauss_1d, psnr_from_mse, ssim, ssim_map


def _ssim_reference(a, b):
    """Wang et al. 2004 with an explicit 11x11 Gaussian window, zero padding, per channel."""
    g = _gauss_1d()
    w = (g[:, None] * g[None])[None, None]
    H, W = a.shape[:2]
    x = a.permute(2, 0, 1).reshape(3, 1, H, W)
    y = b.permute(2, 0, 1).reshape(3, 1, H, W)
    mx, my = F.conv2d(x, w, padding=5), F.conv2d(y, w, padding=5)
    sxx = F.conv2d(x * x, w, padding=5) - mx ** 2
    syy = F.conv2d(y * y, w, padding=5) - my ** 2
    sxy = F.conv2d(x * y, w, padding=5) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
    return s.mean(0)[0]


def test_ssim_matches_2d_window_definition():
    torch.manual_seed(0)
    a = torch.rand(37, 52, 3)
    b = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    assert torch.allclose(ssim_map(a, b), _ssim_reference(a, b), atol=1e-5)
    assert abs(float(ssim(a, a)) - 1.0) < 1e-5
    assert float(ssim(a, torch.rand_like(a))) < 0.2


def test_ssim_gradient_and_psnr():
    a = torch.rand(16, 16, 3, requires_grad=True)
    (1 - ssim(a, torch.rand(16, 16, 3))).backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    assert math.isclose(psnr_from_mse(0.01), 20.0)
    assert math.isclose(psnr_from_mse(1e-4), 40.0)
