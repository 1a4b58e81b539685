"""Head tracking from 2D landmarks: focal-length estimate, per-frame PnP against the canonical face,
temporal smoothing, pose-free 3D landmarks, blink and mouth openness.

Conventions: OpenCV camera; head_pose = camera-to-head [4, 4] (the camera's pose in the head frame);
K in pixels of the working frames.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from avatar.data import face_model
from avatar.data.cameras import quat_to_rotmat, rotmat_to_quat
from avatar.data.schema import NUM_LANDMARKS


def rigid_indices() -> np.ndarray:
    """Canonical landmarks that move little with expression: the upper face (above the upper lip)
    without eyelids and brows, and without the iris points."""
    C = face_model.canonical()
    upper = np.flatnonzero(C[:468, 1] < 0.012)
    moving = np.concatenate([face_model.LEFT_EYE, face_model.RIGHT_EYE, face_model.LEFT_BROW,
                             face_model.RIGHT_BROW, face_model.LIPS_OUTER, face_model.LIPS_INNER])
    return np.setdiff1d(upper, moving)


def _K(f: float, w: int, h: int) -> np.ndarray:
    return np.array([[f, 0, w / 2.0], [0, f, h / 2.0], [0, 0, 1]], np.float64)


def solve_pose(lm2d: np.ndarray, K: np.ndarray, idx: np.ndarray, guess=None):
    """PnP of landmarks [478, 2] against the canonical face -> (rvec [3], tvec [3], rms px).
    Object points are in the head frame; (R, t) maps head to camera."""
    import cv2

    obj = face_model.canonical()[idx].astype(np.float64)
    img = lm2d[idx].astype(np.float64)
    if guess is None:
        ok, rvec, tvec = cv2.solvePnP(obj, img, K, None, flags=cv2.SOLVEPNP_SQPNP)
        if not ok:
            ok, rvec, tvec = cv2.solvePnP(obj, img, K, None, flags=cv2.SOLVEPNP_EPNP)
        ok, rvec, tvec = cv2.solvePnP(obj, img, K, None, rvec, tvec, True, flags=cv2.SOLVEPNP_ITERATIVE)
    else:
        ok, rvec, tvec = cv2.solvePnP(obj, img, K, None, guess[0].copy(), guess[1].copy(), True,
                                      flags=cv2.SOLVEPNP_ITERATIVE)
    proj, _ = cv2.projectPoints(obj, rvec, tvec, K, None)
    rms = float(np.sqrt(((proj[:, 0] - img) ** 2).sum(1).mean()))
    return rvec.reshape(3), tvec.reshape(3), rms


def estimate_focal(lm2d: np.ndarray, valid: np.ndarray, size, max_frames: int = 12) -> float:
    """Focal length (px) minimising the mean PnP reprojection error over a subset of frames:
    a coarse log-spaced search over 0.4-6 x the longer image side, then golden-section refinement.
    Near-frontal faces constrain it weakly; errors mostly change the depth, not the rotation."""
    w, h = size
    frames = np.flatnonzero(valid)
    if len(frames) > max_frames:
        frames = frames[np.linspace(0, len(frames) - 1, max_frames).round().astype(int)]
    idx = rigid_indices()

    def cost(f: float) -> float:
        K = _K(f, w, h)
        return float(np.mean([solve_pose(lm2d[i], K, idx)[2] for i in frames]))

    side = max(w, h)
    grid = side * np.geomspace(0.4, 6.0, 12)
    costs = [cost(f) for f in grid]
    k = int(np.argmin(costs))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    g = (np.sqrt(5) - 1) / 2
    a, b = lo + (1 - g) * (hi - lo), lo + g * (hi - lo)
    fa, fb = cost(a), cost(b)
    for _ in range(6):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = lo + (1 - g) * (hi - lo)
            fa = cost(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = cost(b)
    return float((lo + hi) / 2)


FOV_RANGE_DEG = (25.0, 100.0)
"""Horizontal fields of view (of the longer image side) a focal estimate may imply: phone, webcam and
camcorder lenses lie inside; outside it the estimate is weakly constrained (a small or distant face has
almost no perspective, e.g. two people in a wide shot), not a real lens."""


def plausible_focal(f: float, size) -> tuple:
    """(focal, warning or None): an estimate whose field of view is outside FOV_RANGE_DEG is clamped to the
    nearest bound (and the warning says so and names --focal)."""
    side = max(size)
    lo = side / 2 / np.tan(np.radians(FOV_RANGE_DEG[1]) / 2)
    hi = side / 2 / np.tan(np.radians(FOV_RANGE_DEG[0]) / 2)
    if lo <= f <= hi:
        return float(f), None
    g = float(min(max(f, lo), hi))
    fov = np.degrees(2 * np.arctan(side / 2 / f))
    return g, (f"focal length estimate {f:.0f} px ({fov:.0f} deg field of view) is outside the plausible "
               f"{FOV_RANGE_DEG[0]:g}-{FOV_RANGE_DEG[1]:g} deg (the face is small in the frame, so perspective "
               f"barely constrains it); using {g:.0f} px at the working size {size[0]}x{size[1]}: pass "
               f"--focal PIXELS if you know the lens")


def gaussian_smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian filter along axis 0 (edge-replicated), x [F, ...]."""
    if sigma <= 0 or len(x) < 2:
        return x.copy()
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.concatenate([np.repeat(x[:1], r, 0), x, np.repeat(x[-1:], r, 0)])
    return sum(k[j] * pad[j:j + len(x)] for j in range(2 * r + 1))


def smooth_poses(R: np.ndarray, t: np.ndarray, valid: np.ndarray, sigma: float):
    """Gaussian temporal smoothing of rotations [F, 3, 3] (quaternions, sign-aligned, renormalised)
    and translations [F, 3], within each run of consecutive valid frames."""
    from .landmarks import runs

    R = R.copy()
    t = t.copy()
    if sigma <= 0:
        return R, t
    for a, b in runs(valid):
        if b - a < 2:
            continue
        q = rotmat_to_quat(R[a:b])
        for i in range(1, len(q)):
            if np.dot(q[i], q[i - 1]) < 0:
                q[i] = -q[i]
        R[a:b] = quat_to_rotmat(gaussian_smooth(q, sigma))
        t[a:b] = gaussian_smooth(t[a:b], sigma)
    return R, t


def backproject(lm2d: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Pose-free 3D landmarks [478, 3] (head frame, metres): each 2D landmark is lifted onto its
    camera ray at the depth of the posed canonical point, then mapped back to the head frame."""
    C = face_model.canonical().astype(np.float64)
    Xc = C @ R.T + t                                          # [478, 3] camera frame
    uv1 = np.c_[lm2d.astype(np.float64), np.ones(len(lm2d))]
    rays = uv1 @ np.linalg.inv(K).T                           # z = 1
    Xl = rays * Xc[:, 2:3]
    return ((Xl - t) @ R).astype(np.float32)                  # R^T (X - t)


def blink_from_ear(ear: np.ndarray, closed_ratio: float) -> np.ndarray:
    """Eye aspect ratio [F] -> blink in [0, 1] (1 = closed), relative to the person's open-eye EAR
    (90th percentile): 0 at that EAR, 1 at closed_ratio x that EAR or below."""
    ear = np.asarray(ear, np.float64)
    if ear.size == 0:
        return ear.astype(np.float32)
    ref = np.percentile(ear, 90)
    b = (ref - ear) / max(ref * (1.0 - closed_ratio), 1e-9)
    return np.clip(b, 0.0, 1.0).astype(np.float32)


def track(lm2d: np.ndarray, valid: np.ndarray, size, *, focal: Optional[float] = None, K: Optional[np.ndarray] = None,
          smooth_sigma: float = 1.0, blink_closed_ratio: float = 0.35) -> Dict[str, np.ndarray]:
    """Track one camera stream. lm2d [F, 478, 2] (working px), valid [F] -> dict with
    K [3, 3], head_pose [F, 4, 4] (camera-to-head, identity where invalid), landmarks3d [F, 478, 3],
    blink [F], mouth_open [F], rms [F] (PnP reprojection error, px), focal (float)."""
    w, h = size
    F = lm2d.shape[0]
    focal_warning = None
    if K is None:
        if focal is None:
            focal, focal_warning = plausible_focal(estimate_focal(lm2d, valid, size), size)
        K = _K(focal, w, h)
    K = np.asarray(K, np.float64)
    idx = rigid_indices()
    R = np.tile(np.eye(3), (F, 1, 1))
    t = np.zeros((F, 3))
    rms = np.full(F, np.nan)
    guess = None
    prev_i = -10
    for i in np.flatnonzero(valid):
        rvec, tvec, e = solve_pose(lm2d[i], K, idx, guess if i == prev_i + 1 else None)
        guess = (rvec, tvec)
        prev_i = i
        import cv2

        R[i] = cv2.Rodrigues(rvec)[0]
        t[i] = tvec
        rms[i] = e
    R, t = smooth_poses(R, t, valid, smooth_sigma)
    lm3 = np.zeros((F, NUM_LANDMARKS, 3), np.float32)
    pose = np.tile(np.eye(4), (F, 1, 1))
    for i in np.flatnonzero(valid):
        lm3[i] = backproject(lm2d[i], K, R[i], t[i])
        pose[i, :3, :3] = R[i].T
        pose[i, :3, 3] = -R[i].T @ t[i]
    ear = face_model.eye_aspect_ratio(lm3)
    blink = np.zeros(F, np.float32)
    if valid.any():
        blink[valid] = blink_from_ear(ear[valid], blink_closed_ratio)
    mouth = np.where(valid, face_model.mouth_openness(lm3), 0.0).astype(np.float32)
    return {"K": K, "head_pose": pose, "landmarks3d": lm3, "blink": blink, "mouth_open": mouth,
            "rms": rms, "focal": float(K[0, 0]), "focal_warning": focal_warning}


def rotation_angles_deg(head_pose: np.ndarray) -> np.ndarray:
    """[F, 4, 4] camera-to-head -> [F, 3] yaw (about y), pitch (about x), roll (about z) in degrees
    of the head-to-camera rotation R = Ry(yaw) Rx(pitch) Rz(roll)."""
    R = np.swapaxes(np.asarray(head_pose, np.float64)[:, :3, :3], 1, 2)
    pitch = np.arcsin(np.clip(-R[:, 1, 2], -1, 1))
    yaw = np.arctan2(R[:, 0, 2], R[:, 2, 2])
    roll = np.arctan2(R[:, 1, 0], R[:, 1, 1])
    return np.degrees(np.stack([yaw, pitch, roll], 1))
