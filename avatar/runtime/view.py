"""Stereo camera pairs for VR from a mono camera.

The two eyes sit `ipd` metres apart along the mono camera's x axis (its centre halfway between
them), keep its "down" direction, and are toed in to converge on the head: the point of the mono
camera's optical axis closest to the head centre (the world origin), so the mono framing is kept
and the head appears at zero disparity. Both eyes share the mono intrinsics; the renderer draws
them in ONE rasterize call with C = 2 (left, right). Side-by-side output puts the left eye on the
left.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from avatar.runtime.camera_path import look_at


@dataclass
class StereoConfig:
    """Stereo rendering (VR): two eyes in one rasterize call, side by side."""

    enabled: bool = False
    """Render a stereo pair instead of a mono view."""
    ipd: float = 0.063
    """Inter-pupillary distance in metres (adult mean 0.063)."""
    converge: bool = True
    """Toe the eyes in to converge on the head (False: parallel cameras)."""


def stereo_viewmats(viewmat: np.ndarray, ipd: float = 0.063, converge: bool = True,
                    head: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Mono world-to-camera [4, 4] -> eyes [2, 4, 4] (left, right), OpenCV axes."""
    if not np.isfinite(ipd) or not 0 < ipd < 1.0:
        raise ValueError(f"ipd must be in (0, 1) metres, got {ipd}")
    V = np.asarray(viewmat, np.float64)
    R, t = V[:3, :3], V[:3, 3]
    centre = -R.T @ t
    right, down, fwd = R[0], R[1], R[2]  # camera axes in world coordinates
    eyes = [centre - 0.5 * ipd * right, centre + 0.5 * ipd * right]
    out = np.zeros((2, 4, 4))
    if converge:
        depth = float(np.dot(np.asarray(head, np.float64) - centre, fwd))
        if depth <= 1e-6:
            raise ValueError("stereo convergence: the head centre is behind the mono camera")
        target = centre + depth * fwd
        for i, e in enumerate(eyes):
            out[i] = look_at(e, target, down)
    else:
        for i, e in enumerate(eyes):
            out[i, :3, :3] = R
            out[i, :3, 3] = -R @ e
            out[i, 3, 3] = 1.0
    return out.astype(np.float32)


def side_by_side(views: np.ndarray) -> np.ndarray:
    """Views [C, H, W, ...] -> one image [H, C*W, ...] (left eye first)."""
    views = np.asarray(views)
    return np.concatenate(list(views), axis=1)
