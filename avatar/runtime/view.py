"""Views: the camera of each frame (`ViewConfig`, `cameras_for`) and stereo pairs for VR.

Stereo: 
The two eyes sit `ipd` metres apart along the mono camera's x axis (its centre halfway between
them), keep its "down" direction, and are toed in to converge on the head: the point of the mono
camera's optical axis closest to the head centre (the world origin), so the mono framing is kept
and the head appears at zero disparity. Both eyes share the mono intrinsics; the renderer draws
them in ONE rasterize call with C = 2 (left, right). Side-by-side output puts the left eye on the
left.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np

from avatar.data.cameras import look_at
from avatar.runtime.camera_path import Camera, PoseSource, frontal_camera


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


# ----------------------------------------------------------------------------- shared options
@dataclass
class ViewConfig:
    """Output view: size, pose, stereo."""

    width: int = 256
    """Output width per eye in pixels (even: H.264)."""
    height: int = 256
    """Output height in pixels (even: H.264)."""
    stereo: bool = False
    """Render a stereo pair (left, right) side by side, both eyes in one rasterize call."""
    ipd: float = 0.063
    """Stereo inter-pupillary distance in metres."""
    backend: str = "auto"
    """Rasterizer backend (auto, cuda, gsplat, cpu, torch)."""


def cameras_for(pose: PoseSource, t: int, view: ViewConfig) -> Tuple[np.ndarray, np.ndarray]:
    """Viewmats [C, 4, 4], Ks [C, 3, 3] (float32) for frame t: the pose source's camera resized
    to the output size, duplicated into a converged stereo pair when view.stereo."""
    cam = pose.camera(t)
    if (cam.width, cam.height) != (view.width, view.height):
        cam = cam.resized(view.width, view.height)
    if view.stereo:
        return stereo_viewmats(cam.viewmat, view.ipd), np.stack([cam.K, cam.K])
    return cam.viewmat[None].astype(np.float32), cam.K[None].astype(np.float32)


# ----------------------------------------------------------------------------- procedural head
def procedural_camera(width: int, height: int) -> Camera:
    """Default frontal camera for the procedural head."""
    return frontal_camera(width, height, distance=0.6, fov_y_deg=30.0)
