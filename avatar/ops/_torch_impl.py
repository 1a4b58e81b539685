"""Pure-PyTorch reference rasterizer: dense, device-agnostic, differentiable by autograd.

This is the slow twin of the native kernels (cuda/include/avatar/*.h). It implements exactly the
same math, thresholds and culling rules, so `cpu`/`cuda` can be checked against it forward and
backward:

  * covariance from quaternion (wxyz, normalised here) and linear scales: Sigma = R S S^T R^T
  * EWA projection (Zwicker et al. 2002): Sigma2d = J W Sigma W^T J^T with the perspective
    Jacobian J evaluated at the camera-space mean, x/z and y/z clamped to 1.3x the field of view
    (as gsplat does) so Gaussians far outside the frustum do not blow up.
  * low-pass filter Sigma2d += eps2d I; in "antialiased" mode the opacity is multiplied by
    sqrt(det(Sigma2d) / det(Sigma2d + eps2d I)) (Mip-Splatting / gsplat).
  * opacity-aware per-axis extent (as gsplat): alpha = o exp(-sigma) can reach 1/255 only where
    sigma <= L = log(255 o) (o after the antialiasing compensation), an ellipse whose bounding box
    has half-widths r = (ceil(sqrt(2 L Sigma2d_xx)), ceil(sqrt(2 L Sigma2d_yy))) pixels.
  * culling: z outside [near, far], det <= 0, o <= 1/255 (L <= 0), or the box outside the image
    -> radius 0.
  * tiles of 16x16: a Gaussian touches only pixels of the tiles its box overlaps
    (tile_min = floor((m - r) / 16), tile_max = ceil((m + r) / 16) per axis, clamped to the grid).
    Every pixel where its alpha reaches 1/255 lies in the box, so the tiling changes no pixel.
  * per pixel, front-to-back in depth order: sigma = 0.5 (A dx^2 + C dy^2) + B dx dy,
    alpha = min(0.99, o exp(-sigma)); skipped when sigma < 0 or alpha < 1/255; compositing stops
    before the Gaussian that would bring transmittance to <= 1e-4 (3DGS, Kerbl et al. 2023).
  * SH (degree 0-3) evaluated along the unit direction camera centre -> mean, +0.5, clamped at 0.

Shapes: I = flattened (batch x camera) images, N Gaussians, D feature channels.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

TILE = 16
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
T_MIN = 1e-4

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792,
         0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """quats [..., 4] wxyz (any norm; zero -> identity) -> rotation matrices [..., 3, 3]."""
    n = quats.square().sum(-1, keepdim=True).clamp_min(1e-24).sqrt()
    q = quats / n
    w, x, y, z = q.unbind(-1)
    r = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1)
    return r.reshape(quats.shape[:-1] + (3, 3))


def quat_scale_to_covar(quats: Tensor, scales: Tensor) -> Tensor:
    """quats [..., 4], scales [..., 3] -> Sigma [..., 3, 3] = (R S)(R S)^T."""
    m = quat_to_rotmat(quats) * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def project(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, viewmats: Tensor,
            Ks: Tensor, width: int, height: int, near: float, far: float, eps2d: float,
            antialiased: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """EWA projection of N Gaussians into C cameras (B = flattened batch).

    means [B,N,3], quats [B,N,4], scales [B,N,3], opacities [B,N], viewmats [B,C,4,4], Ks [B,C,3,3]
    -> means2d [B,C,N,2], conics [B,C,N,3] (A, B, C of the inverse 2D covariance), depths [B,C,N],
       radii [B,C,N,2] int32 per-axis extents (0 = culled), opacities [B,C,N] (times the
       antialiasing compensation).
    Culled entries have finite values (zeros for conics/opacities) and zero gradient.
    """
    R = viewmats[..., :3, :3]                                    # [B,C,3,3]
    t = viewmats[..., :3, 3]                                     # [B,C,3]
    p = torch.einsum("bcij,bnj->bcni", R, means) + t[:, :, None, :]   # [B,C,N,3]
    x, y, z = p.unbind(-1)
    fx, fy = Ks[..., 0, 0][..., None], Ks[..., 1, 1][..., None]   # [B,C,1]
    cx, cy = Ks[..., 0, 2][..., None], Ks[..., 1, 2][..., None]
    in_depth = (z >= near) & (z <= far)
    zs = torch.where(in_depth, z, torch.ones_like(z))            # safe z: no inf/NaN in culled grads
    covar = quat_scale_to_covar(quats, scales)                   # [B,N,3,3]
    cov_c = R[:, :, None] @ covar[:, None] @ R[:, :, None].transpose(-1, -2)   # [B,C,N,3,3]

    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    tx = zs * torch.minimum(torch.maximum(x / zs, -lim_x_neg), lim_x_pos)
    ty = zs * torch.minimum(torch.maximum(y / zs, -lim_y_neg), lim_y_pos)
    zero = torch.zeros_like(zs)
    J = torch.stack([fx / zs, zero, -fx * tx / (zs * zs),
                     zero, fy / zs, -fy * ty / (zs * zs)], -1).reshape(zs.shape + (2, 3))
    cov2d = J @ cov_c @ J.transpose(-1, -2)                      # [B,C,N,2,2]
    a0, b0, c0 = cov2d[..., 0, 0], cov2d[..., 0, 1], cov2d[..., 1, 1]
    det_orig = a0 * c0 - b0 * b0
    a, c = a0 + eps2d, c0 + eps2d
    b = b0
    det = a * c - b * b
    ok = in_depth & (det > 0)
    dets = torch.where(ok, det, torch.ones_like(det))
    conics = torch.stack([c / dets, -b / dets, a / dets], -1)
    if antialiased:
        ratio = det_orig / dets
        pos = ok & (ratio > 0)
        comp = torch.where(pos, torch.where(pos, ratio, torch.ones_like(ratio)).sqrt(),
                           torch.zeros_like(ratio))
        opac = opacities[:, None, :] * comp
    else:
        opac = opacities[:, None, :].expand_as(z)
    mx = fx * x / zs + cx
    my = fy * y / zs + cy
    means2d = torch.stack([mx, my], -1)

    with torch.no_grad():
        L = torch.log(torch.clamp_min(opac * 255.0, 1e-30))
        ok = ok & (L > 0)
        Lp = torch.where(ok, L, torch.zeros_like(L))
        rx = torch.ceil((2.0 * Lp * a).sqrt())
        ry = torch.ceil((2.0 * Lp * c).sqrt())
        ok = ok & (rx > 0) & (ry > 0)
        ok = ok & (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        radii = torch.where(ok[..., None], torch.stack([rx, ry], -1), torch.zeros_like(rx)[..., None])
        radii = radii.to(torch.int32)
    okf = ok.to(means.dtype)
    conics = conics * okf[..., None]
    opac = opac * okf
    depths = z
    return means2d, conics, depths, radii, opac


def eval_sh(sh_degree: int, coeffs: Tensor, dirs: Tensor) -> Tensor:
    """Real SH up to degree 3. coeffs [..., K, 3] (K >= (deg+1)^2), dirs [..., 3] (unit) ->
    colors [..., 3] = clamp_min(sum_k Y_k(dir) c_k + 0.5, 0)."""
    out = SH_C0 * coeffs[..., 0, :]
    if sh_degree >= 1:
        x, y, z = (d[..., None] for d in dirs.unbind(-1))
        out = out - SH_C1 * y * coeffs[..., 1, :] + SH_C1 * z * coeffs[..., 2, :] - SH_C1 * x * coeffs[..., 3, :]
        if sh_degree >= 2:
            xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
            out = (out + SH_C2[0] * xy * coeffs[..., 4, :] + SH_C2[1] * yz * coeffs[..., 5, :]
                   + SH_C2[2] * (2 * zz - xx - yy) * coeffs[..., 6, :]
                   + SH_C2[3] * xz * coeffs[..., 7, :] + SH_C2[4] * (xx - yy) * coeffs[..., 8, :])
            if sh_degree >= 3:
                out = (out + SH_C3[0] * y * (3 * xx - yy) * coeffs[..., 9, :]
                       + SH_C3[1] * xy * z * coeffs[..., 10, :]
                       + SH_C3[2] * y * (4 * zz - xx - yy) * coeffs[..., 11, :]
                       + SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * coeffs[..., 12, :]
                       + SH_C3[4] * x * (4 * zz - xx - yy) * coeffs[..., 13, :]
                       + SH_C3[5] * z * (xx - yy) * coeffs[..., 14, :]
                       + SH_C3[6] * x * (xx - 3 * yy) * coeffs[..., 15, :])
    return torch.clamp_min(out + 0.5, 0.0)


def sh_colors(sh_degree: int, coeffs: Tensor, means: Tensor, viewmats: Tensor) -> Tensor:
    """coeffs [B,N,K,3], means [B,N,3], viewmats [B,C,4,4] -> colors [B,C,N,3] seen from each
    camera centre (view direction = normalised mean - camera centre)."""
    R = viewmats[..., :3, :3]
    t = viewmats[..., :3, 3]
    campos = -(R.transpose(-1, -2) @ t[..., None])[..., 0]      # [B,C,3]
    d = means[:, None] - campos[:, :, None]                       # [B,C,N,3]
    n = d.square().sum(-1, keepdim=True).clamp_min(1e-24).sqrt()
    dirs = d / n
    return eval_sh(sh_degree, coeffs[:, None].expand(-1, d.shape[1], -1, -1, -1), dirs)


def tile_bounds(means2d: Tensor, radii: Tensor, width: int, height: int) -> Tensor:
    """means2d [...,2], radii [...,2] (per-axis) -> int64 [..., 4] (tx0, tx1, ty0, ty1), half-open
    tile ranges."""
    tw = (width + TILE - 1) // TILE
    th = (height + TILE - 1) // TILE
    m = means2d.detach()
    r = radii.to(m.dtype)
    tx0 = torch.floor((m[..., 0] - r[..., 0]) / TILE).clamp(0, tw)
    tx1 = torch.ceil((m[..., 0] + r[..., 0]) / TILE).clamp(0, tw)
    ty0 = torch.floor((m[..., 1] - r[..., 1]) / TILE).clamp(0, th)
    ty1 = torch.ceil((m[..., 1] + r[..., 1]) / TILE).clamp(0, th)
    return torch.stack([tx0, tx1, ty0, ty1], -1).long()


def _composite_chunk(m2d: Tensor, con: Tensor, feat: Tensor, op: Tensor, tx0: Tensor, tx1: Tensor,
                     px: Tensor, py: Tensor, ptx: Tensor) -> Tuple[Tensor, Tensor]:
    """Dense front-to-back compositing of G depth-sorted Gaussians over P pixels.
    m2d [G,2], con [G,3], feat [G,D], op [G], tx0/tx1 [G] tile x-range, px/py [P] pixel centres,
    ptx [P] pixel tile column -> (features [P,D], alpha [P])."""
    dx = m2d[:, 0][None, :] - px[:, None]                         # [P,G]
    dy = m2d[:, 1][None, :] - py[:, None]
    sigma = 0.5 * (con[:, 0] * dx * dx + con[:, 2] * dy * dy) + con[:, 1] * dx * dy
    alpha = torch.clamp(op * torch.exp(-sigma), max=ALPHA_MAX)
    inside = (ptx[:, None] >= tx0[None, :]) & (ptx[:, None] < tx1[None, :])
    ok = inside & (sigma >= 0) & (alpha >= ALPHA_MIN)
    alpha = torch.where(ok, alpha, torch.zeros_like(alpha))
    with torch.no_grad():
        keep = torch.cumprod(1 - alpha, -1) > T_MIN                # stop before T would drop <= 1e-4
    alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
    T_incl = torch.cumprod(1 - alpha, -1)
    T_excl = torch.cat([torch.ones_like(T_incl[:, :1]), T_incl[:, :-1]], -1)
    w = alpha * T_excl
    return w @ feat, 1 - T_incl[:, -1]


def rasterize_pixels(means2d: Tensor, conics: Tensor, features: Tensor, opacities: Tensor,
                     radii: Tensor, depths: Tensor, width: int, height: int) -> Tuple[Tensor, Tensor]:
    """Per image: sort by depth, then composite each band of one tile row (16 pixel rows) densely
    against every Gaussian whose tile range covers that row (gradient-checkpointed per band so
    memory stays bounded). means2d [I,N,2], conics [I,N,3], features [I,N,D], opacities [I,N],
    radii [I,N,2], depths [I,N] -> render [I,H,W,D], alphas [I,H,W,1]."""
    I, N = radii.shape[:2]
    D = features.shape[-1]
    dev, dt = features.device, features.dtype
    bounds = tile_bounds(means2d, radii, width, height)           # [I,N,4]
    need_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (means2d, conics, features, opacities))
    xs = torch.arange(width, device=dev, dtype=dt) + 0.5
    imgs, alps = [], []
    for i in range(I):
        valid = torch.nonzero(radii[i, :, 0] > 0).flatten()
        order = valid[torch.sort(depths[i, valid].detach(), stable=True).indices]
        bi = bounds[i, order]
        rows, arows = [], []
        for ty, y0 in enumerate(range(0, height, TILE)):
            y1 = min(height, y0 + TILE)
            sel = order[(bi[:, 2] <= ty) & (bi[:, 3] > ty)]        # depth order is kept
            if sel.numel() == 0:
                rows.append(torch.zeros((y1 - y0) * width, D, device=dev, dtype=dt))
                arows.append(torch.zeros((y1 - y0) * width, device=dev, dtype=dt))
                continue
            ys = torch.arange(y0, y1, device=dev, dtype=dt) + 0.5
            py = ys[:, None].expand(-1, width).reshape(-1)
            px = xs[None, :].expand(y1 - y0, -1).reshape(-1)
            ptx = torch.div(px.floor().long(), TILE, rounding_mode="floor")
            args = (means2d[i, sel], conics[i, sel], features[i, sel], opacities[i, sel],
                    bounds[i, sel, 0], bounds[i, sel, 1], px, py, ptx)
            if need_grad:
                f, a = checkpoint(_composite_chunk, *args, use_reentrant=False)
            else:
                f, a = _composite_chunk(*args)
            rows.append(f)
            arows.append(a)
        imgs.append(torch.cat(rows, 0).reshape(height, width, D))
        alps.append(torch.cat(arows, 0).reshape(height, width, 1))
    return torch.stack(imgs, 0), torch.stack(alps, 0)
