"""Face landmark backends behind one interface.

A backend is called once per frame, in order, and returns every face it sees as mediapipe-topology
landmarks [478, 2] in pixels of that frame (continuous coordinates, pixel centres at +0.5):

    backend = make_backend(cfg, stream)      # context: source info, output fps, working size
    faces = backend(frame_rgb_uint8, n)      # list of np.float32 [478, 2]
    backend.close()

Backends: "mediapipe" (face mesh with refined eyes/lips, 478 points; its models ship inside the
wheel, fully offline), "face-alignment" (optional package; 68 points fitted onto the 478 topology;
its weights must already be in torch's hub cache, it never downloads here), "known" (landmarks2d
from a synthetic clip's ground_truth.npz).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import numpy as np

from avatar.data.schema import NUM_LANDMARKS

from .errors import CaptureError

# iBUG-68 point k -> mediapipe index (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, lips 48-67).
IBUG68_TO_MP = np.array([
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 82, 13, 312, 308, 317, 14, 87], np.int64)
assert IBUG68_TO_MP.shape == (68,)


class MediapipeBackend:
    """mediapipe FaceMesh (tracking mode, refine_landmarks=True): 478 landmarks per face.

    A mesh allowed several faces re-runs its face detector on every frame while it tracks fewer
    than that many (~45% slower on a one-person clip), so the mesh tracks one face until the face
    detector, run every `check_every` frames, sees two or more; from then on a multi-face mesh is used."""

    name = "mediapipe"

    def __init__(self, max_faces: int = 3, min_confidence: float = 0.5, check_every: int = 5):
        from .noise import import_mediapipe

        mp = import_mediapipe()

        self._mp = mp
        self._max = max(1, max_faces)
        self._conf = min_confidence
        self._every = max(1, check_every)
        self._mesh = self._make_mesh(1)
        self._multi = False
        self._det = mp.solutions.face_detection.FaceDetection(model_selection=1,
                                                              min_detection_confidence=min_confidence)

    def _make_mesh(self, n: int):
        return self._mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False, max_num_faces=n, refine_landmarks=True,
            min_detection_confidence=self._conf, min_tracking_confidence=self._conf)

    def __call__(self, frame: np.ndarray, index: int) -> List[np.ndarray]:
        h, w = frame.shape[:2]
        frame = np.ascontiguousarray(frame)
        if not self._multi and self._max > 1 and index % self._every == 0:
            dets = self._det.process(frame).detections or []
            if len(dets) >= 2:
                self._mesh.close()
                self._mesh = self._make_mesh(self._max)
                self._multi = True
        res = self._mesh.process(frame)
        out = []
        for face in res.multi_face_landmarks or []:
            lm = np.array([(p.x, p.y) for p in face.landmark], np.float32)  # [478, 2] normalised
            if lm.shape != (NUM_LANDMARKS, 2):
                continue
            lm *= (w, h)
            out.append(lm)
        return out

    def close(self) -> None:
        self._mesh.close()
        self._det.close()


def _torch_hub_checkpoints() -> Path:
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch")
    return Path(home) / "hub" / "checkpoints"


FACE_ALIGNMENT_WEIGHTS = {
    "s3fd-619a316812.pth": "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
    "2DFAN4-cd938726ad.zip": "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-cd938726ad.zip",
}


class FaceAlignmentBackend:
    """face-alignment (Bulat & Tzimiropoulos, FAN 2D + S3FD): 68 points, fitted onto the 478 topology
    (an affine fit of the canonical face's x, y to the 68 points; the 68 mapped points keep their
    detected positions). Never downloads: the weights must be in torch's hub cache."""

    name = "face-alignment"

    def __init__(self, max_faces: int = 3):
        ckpt = _torch_hub_checkpoints()
        missing = [f for f in FACE_ALIGNMENT_WEIGHTS
                   if not list(ckpt.glob(f.split("-")[0] + "*" + Path(f).suffix))]
        if missing:
            lines = "; ".join(f"{f} (from {FACE_ALIGNMENT_WEIGHTS[f]})" for f in missing)
            raise CaptureError(
                f"--backend face-alignment: weights not found in {ckpt}: {lines}. Capture never downloads "
                f"weights: put the file(s) in {ckpt} (or set TORCH_HOME), or use --backend mediapipe.")
        try:
            import face_alignment
        except ImportError:
            raise CaptureError("--backend face-alignment needs the optional package: pip install face-alignment "
                               "(or use --backend mediapipe)") from None
        lt = getattr(face_alignment.LandmarksType, "TWO_D", None) or face_alignment.LandmarksType._2D
        self._fa = face_alignment.FaceAlignment(lt, device="cpu", face_detector="sfd")
        self._max = max_faces
        from avatar.data.face_model import canonical

        self._canon = canonical()[:, :2].astype(np.float64)

    def __call__(self, frame: np.ndarray, index: int) -> List[np.ndarray]:
        preds = self._fa.get_landmarks_from_image(frame) or []
        out = []
        for p in preds[: self._max]:
            p = np.asarray(p, np.float64)[:, :2] + 0.5  # FAN: pixel-index coordinates
            src = np.c_[self._canon[IBUG68_TO_MP], np.ones(68)]
            A, *_ = np.linalg.lstsq(src, p, rcond=None)  # [3, 2] affine
            lm = np.c_[self._canon, np.ones(NUM_LANDMARKS)] @ A
            lm[IBUG68_TO_MP] = p
            out.append(lm.astype(np.float32))
        return out

    def close(self) -> None:
        pass


class KnownBackend:
    """Landmarks from a ground_truth.npz ("landmarks2d" [F, 478, 2] pixels of the source video),
    mapped to the resampled timeline and the working size."""

    name = "known"

    def __init__(self, path: Path, src_fps: float, out_fps: float, src_size, work_size):
        path = Path(path)
        if not path.is_file():
            raise CaptureError(f"--backend known: {path} not found (expected the ground_truth.npz of a "
                               f"synthetic clip; set --known-landmarks)")
        with np.load(path, allow_pickle=False) as z:
            if "landmarks2d" not in z.files:
                raise CaptureError(f"{path}: has no 'landmarks2d' array (keys: {z.files})")
            self._lm = np.asarray(z["landmarks2d"], np.float32)
        if self._lm.ndim != 3 or self._lm.shape[1:] != (NUM_LANDMARKS, 2):
            raise CaptureError(f"{path}: landmarks2d must be [F, {NUM_LANDMARKS}, 2], got {self._lm.shape}")
        self._ratio = src_fps / out_fps
        self._scale = np.array([work_size[0] / src_size[0], work_size[1] / src_size[1]], np.float32)

    def __call__(self, frame: np.ndarray, index: int) -> List[np.ndarray]:
        j = int(round(index * self._ratio))
        if j >= len(self._lm):
            return []
        lm = self._lm[j]
        if not np.isfinite(lm).all():
            return []
        return [lm * self._scale]

    def close(self) -> None:
        pass


def make_backend(name: str, *, max_faces: int = 3, min_confidence: float = 0.5, known_path: Optional[Path] = None,
                 src_fps: float = 25.0, out_fps: float = 25.0, src_size=(1, 1), work_size=(1, 1)):
    if name == "mediapipe":
        return MediapipeBackend(max_faces, min_confidence)
    if name == "face-alignment":
        return FaceAlignmentBackend(max_faces)
    if name == "known":
        return KnownBackend(known_path, src_fps, out_fps, src_size, work_size)
    raise CaptureError(f"--backend must be mediapipe, face-alignment or known, got {name!r}")


def face_box(lm: np.ndarray) -> np.ndarray:
    """[x0, y0, x1, y1] of landmarks [478, 2]."""
    return np.array([lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max()], np.float32)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / ua if ua > 0 else 0.0


def select_track(faces: np.ndarray, counts: np.ndarray):
    """Pick one face per frame: the largest, followed consistently (highest IoU with the previous
    pick while it overlaps, else the largest again).

    faces [F, K, 478, 2] (NaN where absent), counts [F] -> (landmarks2d [F, 478, 2] NaN where none,
    valid [F] bool, multi [F] bool: frames that showed several faces)."""
    F = faces.shape[0]
    out = np.full((F, NUM_LANDMARKS, 2), np.nan, np.float32)
    valid = np.zeros(F, bool)
    multi = counts > 1
    prev = None
    for i in range(F):
        k = int(counts[i])
        if k == 0:
            continue
        boxes = [face_box(faces[i, j]) for j in range(k)]
        areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
        pick = int(np.argmax(areas))
        if prev is not None and k > 1:
            ious = [_iou(prev, b) for b in boxes]
            if max(ious) > 0.3:
                pick = int(np.argmax(ious))
        out[i] = faces[i, pick]
        valid[i] = True
        prev = boxes[pick]
    return out, valid, multi


def runs(mask: np.ndarray):
    """[(start, end_exclusive)] of the True runs of a 1-D bool array."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    d = np.diff(m.astype(np.int8))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))
