"""Head-centred square crop boxes (integer, inside the frame) and the matching intrinsics."""
from __future__ import annotations

import numpy as np

from avatar.data import face_model


def face_centre_size(lm2d: np.ndarray):
    """Face-oval box centre [F, 2] and size [F] (larger side) of landmarks [F, 478, 2]."""
    oval = lm2d[:, face_model.FACE_OVAL]
    lo, hi = oval.min(1), oval.max(1)
    return (lo + hi) / 2, (hi - lo).max(1)


def _clamp_box(cx, cy, side, w, h):
    side = int(round(min(side, w, h)))
    x0 = int(round(cx - side / 2))
    y0 = int(round(cy - side / 2))
    x0 = min(max(x0, 0), w - side)
    y0 = min(max(y0, 0), h - side)
    return x0, y0, side


def crop_boxes(lm2d: np.ndarray, valid: np.ndarray, size, *, mode: str, scale: float, fps: float,
               smooth_s: float) -> np.ndarray:
    """Boxes [F, 3] int (x0, y0, side) in working pixels for every frame (invalid frames get the
    nearest valid frame's box). 'fixed': one box around the median face centre, side = scale x the
    90th-percentile face size, widened to cover the face track; 'smooth': per-frame boxes,
    Gaussian-smoothed over time (sigma smooth_s seconds). Boxes are clamped to the frame."""
    from scipy.ndimage import gaussian_filter1d

    w, h = size
    F = lm2d.shape[0]
    vi = np.flatnonzero(valid)
    c, s = face_centre_size(lm2d[vi])
    boxes = np.zeros((F, 3), np.int64)
    if mode == "fixed":
        cx, cy = np.median(c, 0)
        side = scale * np.percentile(s, 90)
        # widen so every tracked face centre stays inside the middle of the box
        spread = 2 * np.abs(c - [cx, cy]).max()
        side = max(side, spread + np.percentile(s, 90))
        boxes[:] = _clamp_box(cx, cy, side, w, h)
        return boxes
    if mode != "smooth":
        raise ValueError(f"crop_mode must be 'fixed' or 'smooth', got {mode!r}")
    # fill invalid frames by nearest valid, then smooth
    near = vi[np.clip(np.searchsorted(vi, np.arange(F)), 0, len(vi) - 1)]
    cc, ss = np.zeros((F, 2)), np.zeros(F)
    cc[vi], ss[vi] = c, s
    cc, ss = cc[near], ss[near]
    sig = max(smooth_s * fps, 1e-3)
    cc = gaussian_filter1d(cc, sig, axis=0, mode="nearest")
    ss = gaussian_filter1d(ss, sig, mode="nearest")
    for i in range(F):
        boxes[i] = _clamp_box(cc[i, 0], cc[i, 1], scale * ss[i], w, h)
    return boxes


def crop_K(K: np.ndarray, box, out_size: int) -> np.ndarray:
    """Intrinsics of the crop box (x0, y0, side) resized to out_size (continuous pixel coordinates:
    x' = (x - x0) * out_size / side)."""
    x0, y0, side = box
    s = out_size / float(side)
    K2 = np.asarray(K, np.float64).copy()
    K2[0, 0] *= s
    K2[1, 1] *= s
    K2[0, 2] = (K2[0, 2] - x0) * s
    K2[1, 2] = (K2[1, 2] - y0) * s
    return K2


def crop_image(img: np.ndarray, box, out_size: int, nearest: bool = False) -> np.ndarray:
    """Crop (x0, y0, side) and resize to out_size x out_size (area when shrinking, linear otherwise,
    nearest for label masks)."""
    import cv2

    x0, y0, side = (int(v) for v in box)
    sub = img[y0:y0 + side, x0:x0 + side]
    if side == out_size:
        return np.ascontiguousarray(sub)
    interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if side > out_size else cv2.INTER_LINEAR)
    return cv2.resize(sub, (out_size, out_size), interpolation=interp)


def crop_points(pts: np.ndarray, box, out_size: int) -> np.ndarray:
    """Points [..., 2] (continuous px) into crop coordinates."""
    x0, y0, side = box
    return (pts - np.array([x0, y0], np.float32)) * (out_size / float(side))
