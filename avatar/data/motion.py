"""Person-agnostic motion codes from face landmarks (the same definition for every person).

A motion code is the displacement of a fixed set of expression landmarks from the person's own
neutral face, after removing head pose and face size:

  1. landmarks3d [F, 478, 3] are in the head frame (head pose already removed by tracking);
  2. each frame is rigidly re-aligned (rotation + translation, Kabsch) to the neutral on stable
     points (eye corners, nose bridge, forehead, temples) to cancel residual pose error;
  3. displacements of `indices` from the neutral are divided by the neutral's inter-ocular
     distance (outer eye corners), so codes are in "eye distances" and do not depend on face size;
  4. flattened to [F, 3 * len(indices)] (x, y, z per landmark), times `scale`.

The definition (indices, stable set, normalisation, version) is serialised with `to_dict()` and
saved with datasets and checkpoints; `from_dict()` refuses an unknown version.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

import numpy as np

from avatar.data.schema import NUM_LANDMARKS

MOTION_VERSION = 1

# Expression landmarks (mediapipe indices): lips (outer + inner), eyelids, brows, jaw and cheeks.
_DEFAULT_INDICES: Tuple[int, ...] = (
    # lips outer: corners, upper and lower arcs
    61, 291, 0, 17, 37, 267, 84, 314, 40, 270, 91, 321,
    # lips inner
    78, 308, 13, 14, 82, 312, 87, 317,
    # right eye (subject's right = image left): corners, upper lid, lower lid
    33, 133, 159, 145, 158, 153, 160, 144,
    # left eye
    263, 362, 386, 374, 385, 380, 387, 373,
    # brows
    70, 105, 107, 300, 334, 336,
    # jaw / chin / cheeks
    152, 148, 377, 172, 397, 205, 425,
)
# Rigid points: they hardly move with expression (eye corners, nose bridge/tip, forehead, temples).
_STABLE_INDICES: Tuple[int, ...] = (33, 133, 263, 362, 168, 6, 197, 195, 5, 4, 1, 10, 151, 9, 234, 454, 127, 356)
_EYE_OUTER = (33, 263)


def _kabsch(src: np.ndarray, dst: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Rotation R [..., 3, 3] and translation t [..., 3] minimising |R src + t - dst| (src, dst [..., K, 3])."""
    ms, md = src.mean(-2, keepdims=True), dst.mean(-2, keepdims=True)
    H = np.swapaxes(src - ms, -1, -2) @ (dst - md)
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(np.swapaxes(Vt, -1, -2) @ np.swapaxes(U, -1, -2)))
    D = np.zeros(H.shape, H.dtype)
    D[..., 0, 0] = 1.0
    D[..., 1, 1] = 1.0
    D[..., 2, 2] = d
    R = np.swapaxes(Vt, -1, -2) @ D @ np.swapaxes(U, -1, -2)
    t = md[..., 0, :] - (R @ ms[..., 0, :, None])[..., 0]
    return R, t


@dataclasses.dataclass
class MotionSpace:
    """Definition of the motion-code space (versioned, serialisable, identical for every person)."""

    version: int = MOTION_VERSION
    """Definition version; codes of different versions are not comparable."""
    indices: Tuple[int, ...] = _DEFAULT_INDICES
    """Expression landmarks (mediapipe 478 topology) whose displacements form the code."""
    stable_indices: Tuple[int, ...] = _STABLE_INDICES
    """Landmarks used to rigidly re-align each frame to the neutral before differencing."""
    normalisation: str = "inter_ocular"
    """Size normalisation: displacements divided by the neutral's outer-eye-corner distance."""
    scale: float = 10.0
    """Multiplier after normalisation so typical codes are O(0.1-1) (a 1 cm lip move on a 9 cm
    inter-ocular face gives ~1.1)."""

    @property
    def dim(self) -> int:
        """M, the code size (3 per landmark)."""
        return 3 * len(self.indices)

    def encode(self, landmarks3d: np.ndarray, neutral: np.ndarray) -> np.ndarray:
        """landmarks3d [F, 478, 3] (head frame), neutral [478, 3] -> motion codes float32 [F, M]."""
        lm = np.asarray(landmarks3d, np.float64)
        nt = np.asarray(neutral, np.float64)
        if lm.ndim != 3 or lm.shape[1:] != (NUM_LANDMARKS, 3):
            raise ValueError(f"MotionSpace.encode: landmarks3d must be [F, {NUM_LANDMARKS}, 3], got {lm.shape}")
        if nt.shape != (NUM_LANDMARKS, 3):
            raise ValueError(f"MotionSpace.encode: neutral must be [{NUM_LANDMARKS}, 3], got {nt.shape}")
        if lm.shape[0] == 0:
            return np.zeros((0, self.dim), np.float32)
        st = list(self.stable_indices)
        R, t = _kabsch(lm[:, st], np.broadcast_to(nt[st], (lm.shape[0], len(st), 3)))
        idx = list(self.indices)
        aligned = lm[:, idx] @ np.swapaxes(R, -1, -2) + t[:, None, :]
        iod = np.linalg.norm(nt[_EYE_OUTER[0]] - nt[_EYE_OUTER[1]])
        if not iod > 0:
            raise ValueError("MotionSpace.encode: neutral face has zero inter-ocular distance")
        codes = (aligned - nt[idx]) / iod * self.scale
        return codes.reshape(lm.shape[0], -1).astype(np.float32)

    def estimate_neutral(self, landmarks3d: np.ndarray, mouth_open: np.ndarray | None = None,
                         blink: np.ndarray | None = None, quantile: float = 0.2) -> np.ndarray:
        """Neutral face [478, 3]: per-landmark median over the frames with the most closed mouth
        (<= `quantile` of mouth openness) and open eyes (blink below its median), after rigid
        alignment to the overall median face."""
        lm = np.asarray(landmarks3d, np.float64)
        if lm.ndim != 3 or lm.shape[0] == 0 or lm.shape[1:] != (NUM_LANDMARKS, 3):
            raise ValueError(f"estimate_neutral: landmarks3d must be [F>0, {NUM_LANDMARKS}, 3], got {lm.shape}")
        keep = np.ones(lm.shape[0], bool)
        if mouth_open is not None and len(mouth_open) == lm.shape[0]:
            keep &= np.asarray(mouth_open) <= np.quantile(mouth_open, quantile)
        if blink is not None and len(blink) == lm.shape[0]:
            b = np.asarray(blink)
            keep2 = keep & (b <= np.median(b))
            if keep2.any():
                keep = keep2
        if not keep.any():
            keep[:] = True
        ref = np.median(lm, 0)
        st = list(self.stable_indices)
        sel = lm[keep]
        R, t = _kabsch(sel[:, st], np.broadcast_to(ref[st], (sel.shape[0], len(st), 3)))
        aligned = sel @ np.swapaxes(R, -1, -2) + t[:, None, :]
        return np.median(aligned, 0).astype(np.float32)

    def to_dict(self) -> Dict:
        """Plain-python dict (JSON/YAML/torch.save safe)."""
        d = dataclasses.asdict(self)
        d["indices"] = [int(i) for i in self.indices]
        d["stable_indices"] = [int(i) for i in self.stable_indices]
        return d

    @classmethod
    def from_dict(cls, d: Dict) -> "MotionSpace":
        """Inverse of to_dict(); raises ValueError on an unknown version or field."""
        d = dict(d)
        if int(d.get("version", -1)) != MOTION_VERSION:
            raise ValueError(f"MotionSpace: unsupported version {d.get('version')!r} (this code reads {MOTION_VERSION})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"MotionSpace: unknown fields {sorted(unknown)}")
        for k in ("indices", "stable_indices"):
            if k in d:
                d[k] = tuple(int(i) for i in d[k])
        return cls(**d)
