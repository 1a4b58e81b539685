"""Landmark metrics on detected face landmarks (mediapipe face-mesh topology, 478 points, pixels).

Landmarks are float [T, 478, 2] in pixels of the frames they were detected on; a frame without a
face is all-NaN and is left out of every statistic (the count of such frames is reported).

* LMD (the field's landmark distance, as TalkingGaussian / ER-NeRF report it): the 20 mouth points
  of the 68-point iBUG layout (48-67, mapped from mediapipe by `MOUTH68_MP`), each frame's points
  mean-centred, mean Euclidean distance in pixels between rendered and ground truth; the clip's LMD
  is the mean over frames. `lmd_iod` divides each frame's LMD by the ground truth's inter-ocular
  distance (points 33-263, outer eye corners) first, so it is comparable across resolutions.
* Mouth opening: inner-lip gap |p13 - p14| / inter-ocular distance, per frame.
  `mouth_open_corr` = Pearson(rendered, ground truth); `mouth_amplitude_ratio` = std(rendered) /
  std(ground truth); `mouth_open_mae` = mean |rendered - ground truth|.
* Blink rate: blinks per minute, a blink being a run of frames whose eye aspect ratio
  (avatar.data.face_model) falls below `BLINK_EAR_FRACTION` of the clip's median.
* Head-pose jitter: head angles (yaw, pitch, roll) from a weak-perspective fit of the canonical face
  to the landmarks; jitter = mean |second difference| (L2 over the three angles), deg/frame².

Detection is injected: `detect_sequence(frames, detector)` calls `detector(frame_uint8, index)` (the
interface of capture.landmarks' backends: a list of [478, 2] faces, or one array, or None) and keeps
the largest face.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, Optional

import numpy as np

NUM_LANDMARKS = 478

MOUTH68_MP = np.array([61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
                       78, 82, 13, 312, 308, 317, 14, 87], np.int64)
"""mediapipe indices of iBUG-68 points 48-67 (outer lip 48-59, inner lip 60-67), as capture.landmarks maps them."""

IOD_PAIR = (33, 263)
"""Outer eye corners (image left, image right of a frontal face) whose distance is the inter-ocular distance."""

INNER_LIP_PAIR = (13, 14)
"""Upper and lower inner-lip midpoints."""

BLINK_EAR_FRACTION = 0.6
"""A frame is 'eyes closed' when its eye aspect ratio is below this fraction of the clip's median EAR
(open-eye EAR is ~0.25-0.3 and a closed eye ~0.05, so 0.6 sits well clear of both)."""

Detector = Callable[[np.ndarray, int], object]


def _check(lm, name: str) -> np.ndarray:
    a = np.asarray(lm, np.float64)
    if a.ndim != 3 or a.shape[1:] != (NUM_LANDMARKS, 2):
        raise ValueError(f"{name}: landmarks must be [T, {NUM_LANDMARKS}, 2], got {a.shape}")
    return a


def valid_frames(lm) -> np.ndarray:
    """[T] bool: frames whose landmarks are all finite (a face was found)."""
    return np.isfinite(_check(lm, "valid_frames")).all((1, 2))


def inter_ocular(lm) -> np.ndarray:
    """[T] distance in pixels between the outer eye corners (NaN where no face)."""
    a = _check(lm, "inter_ocular")
    return np.linalg.norm(a[:, IOD_PAIR[0]] - a[:, IOD_PAIR[1]], axis=-1)


def mouth_opening(lm) -> np.ndarray:
    """[T] inner-lip gap / inter-ocular distance (NaN where no face)."""
    a = _check(lm, "mouth_opening")
    gap = np.linalg.norm(a[:, INNER_LIP_PAIR[0]] - a[:, INNER_LIP_PAIR[1]], axis=-1)
    return gap / np.maximum(inter_ocular(a), 1e-9)


def lmd_per_frame(gt, pred, centre: bool = True) -> np.ndarray:
    """[T] mean Euclidean distance (px) of the 20 mouth points; centre=True mean-centres each frame's
    points first (the field's LMD: a pure translation scores 0), centre=False compares raw positions."""
    g = _check(gt, "lmd(gt)")[:, MOUTH68_MP]
    p = _check(pred, "lmd(pred)")[:, MOUTH68_MP]
    if g.shape != p.shape:
        raise ValueError(f"lmd: gt has {g.shape[0]} frames, pred {p.shape[0]}")
    if centre:
        g = g - g.mean(1, keepdims=True)
        p = p - p.mean(1, keepdims=True)
    return np.linalg.norm(g - p, axis=-1).mean(1)


def lmd(gt, pred) -> Dict[str, Optional[float]]:
    """{"lmd": px, "lmd_iod": LMD / ground-truth inter-ocular distance, "lmd_uncentred": px,
    "frames": frames with a face in both} over frames where both have a face."""
    per = lmd_per_frame(gt, pred)
    raw = lmd_per_frame(gt, pred, centre=False)
    iod = inter_ocular(gt)
    ok = np.isfinite(per) & np.isfinite(iod) & (iod > 0)
    if not ok.any():
        return {"lmd": None, "lmd_iod": None, "lmd_uncentred": None, "frames": 0}
    return {"lmd": float(per[ok].mean()), "lmd_iod": float((per[ok] / iod[ok]).mean()),
            "lmd_uncentred": float(raw[ok].mean()), "frames": int(ok.sum())}


def pearson(x, y) -> Optional[float]:
    """Pearson correlation over frames where both are finite; None when fewer than 3 such frames or
    when y (the reference) is constant; 0.0 when only x is constant (no motion cannot co-vary)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return None
    x, y = x[ok], y[ok]
    sy = y.std()
    if sy < 1e-12:
        return None
    sx = x.std()
    if sx < 1e-12:
        return 0.0
    return float(((x - x.mean()) * (y - y.mean())).mean() / (sx * sy))


def opening_stats(gt_open, pred_open) -> Dict[str, Optional[float]]:
    """mouth_open_corr, mouth_amplitude_ratio, mouth_open_mae (+ frames) of two [T] opening series."""
    g, p = np.asarray(gt_open, np.float64), np.asarray(pred_open, np.float64)
    if g.shape != p.shape or g.ndim != 1:
        raise ValueError(f"opening_stats: expected two [T] series, got {g.shape} and {p.shape}")
    ok = np.isfinite(g) & np.isfinite(p)
    n = int(ok.sum())
    if n == 0:
        return {"mouth_open_corr": None, "mouth_amplitude_ratio": None, "mouth_open_mae": None, "frames": 0}
    sg = g[ok].std()
    return {"mouth_open_corr": pearson(p, g),
            "mouth_amplitude_ratio": float(p[ok].std() / sg) if sg > 1e-12 else None,
            "mouth_open_mae": float(np.abs(p[ok] - g[ok]).mean()),
            "frames": n}


def blink_rate(lm, fps: float) -> Dict[str, Optional[float]]:
    """{"blinks": count, "blinks_per_min": rate} from the eye aspect ratio (see module docstring)."""
    from avatar.data.face_model import eye_aspect_ratio

    a = _check(lm, "blink_rate")
    ok = valid_frames(a)
    if ok.sum() < 2:
        return {"blinks": None, "blinks_per_min": None}
    ear = np.full(len(a), np.nan)
    ear[ok] = eye_aspect_ratio(a[ok])
    closed = ear < BLINK_EAR_FRACTION * np.nanmedian(ear)  # NaN compares False: no face = open
    onsets = int(np.count_nonzero(closed[1:] & ~closed[:-1]) + bool(closed[0]))
    minutes = len(a) / float(fps) / 60.0
    return {"blinks": onsets, "blinks_per_min": float(onsets / minutes) if minutes > 0 else None}


def head_angles(lm) -> np.ndarray:
    """[T, 3] (yaw, pitch, roll) in degrees from a weak-perspective fit of the canonical face
    (avatar.data.face_model, OpenCV axes) to each frame's landmarks; NaN where no face."""
    from avatar.data.face_model import canonical

    a = _check(lm, "head_angles")
    X = canonical().astype(np.float64)
    X = X - X.mean(0)
    out = np.full((len(a), 3), np.nan)
    pinv = np.linalg.pinv(X)  # [3, 478]
    for t in np.flatnonzero(valid_frames(a)):
        y = a[t] - a[t].mean(0)
        A = (pinv @ y).T  # [2, 3]: y ~= X @ A.T (scaled rows of the rotation)
        U, _, Vt = np.linalg.svd(A, full_matrices=False)
        R2 = U @ Vt  # nearest matrix with orthonormal rows
        R = np.vstack([R2, np.cross(R2[0], R2[1])])
        yaw = np.degrees(np.arcsin(np.clip(-R[2, 0], -1.0, 1.0)))
        pitch = np.degrees(np.arctan2(R[2, 1], R[2, 2]))
        roll = np.degrees(np.arctan2(R[1, 0], R[0, 0]))
        out[t] = (yaw, pitch, roll)
    return out


def jitter(angles) -> Optional[float]:
    """Mean L2 norm of the second difference of [T, 3] angles (deg/frame²), over runs of finite frames."""
    a = np.asarray(angles, np.float64)
    if a.ndim != 2 or len(a) < 3:
        return None
    d2 = a[2:] - 2 * a[1:-1] + a[:-2]
    n = np.linalg.norm(d2, axis=-1)
    n = n[np.isfinite(n)]
    return float(n.mean()) if n.size else None


def _pick(faces) -> Optional[np.ndarray]:
    if faces is None:
        return None
    if isinstance(faces, np.ndarray) and faces.ndim == 2:
        faces = [faces]
    best, area = None, -1.0
    for f in faces:
        f = np.asarray(f, np.float64)
        if f.shape != (NUM_LANDMARKS, 2) or not np.isfinite(f).all():
            continue
        ext = f.max(0) - f.min(0)
        if ext[0] * ext[1] > area:
            best, area = f, ext[0] * ext[1]
    return best


def detect_sequence(frames: Iterable[np.ndarray], detector: Detector) -> np.ndarray:
    """Run `detector(frame_uint8 [H, W, 3], index)` on each frame in order -> [T, 478, 2] float32,
    the largest face per frame, NaN where none."""
    from .image import as_float

    out = []
    for i, f in enumerate(frames):
        f = np.asarray(f)
        if f.dtype != np.uint8:
            f = (np.clip(as_float(f), 0, 1) * 255 + 0.5).astype(np.uint8)
        lm = _pick(detector(np.ascontiguousarray(f), i))
        out.append(np.full((NUM_LANDMARKS, 2), np.nan) if lm is None else lm)
    if not out:
        return np.zeros((0, NUM_LANDMARKS, 2), np.float32)
    return np.stack(out).astype(np.float32)
