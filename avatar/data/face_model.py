"""Canonical 3D face (mediapipe 478-landmark topology) in the head frame, index groups and face metrics.

CANONICAL  np.float32 [478, 3]: landmarks in the head frame (metres): x toward image right (the
    subject's left), y down, z away from a frontal camera (the face is at negative z). The nose tip
    (landmark 1) is at (0, 0, -0.10); the pupils (468 right, 473 left) are 0.063 m apart, level and
    symmetric about x = 0. Derived by scripts/make_canonical_face.py from mediapipe FaceMesh run on
    the real frontal faces in ../shared/media (Procrustes-aligned, averaged per identity then across
    identities, mirror-symmetrised), stored in canonical_face.npy next to this file.
TRIANGLES  np.int64 [T, 3]: mediapipe's face tessellation (3-cliques of FACEMESH_TESSELATION),
    wound so the normals point toward a frontal camera (-z); stored in canonical_face_tris.npy.

Index groups (np.int64 arrays of landmark indices; "LEFT" = the subject's left = image right, as in
mediapipe). Contours are ordered around the loop: LIPS_OUTER, LIPS_INNER, LEFT_EYE, RIGHT_EYE,
LEFT_BROW, RIGHT_BROW (upper row then lower row back), FACE_OVAL (clockwise from the forehead top, 10).
NOSE is the bridge+tip line, then the nostril rims (unordered as a set). LEFT_IRIS / RIGHT_IRIS
are the refined iris points (centre first).

Metrics work on 2D or 3D landmarks, any leading batch dims, numpy or torch:
  eye_aspect_ratio(lm [..., 478, 2|3]) -> [...]   mean of both eyes' EAR (~0.25-0.3 open, ~0.05 closed)
  eye_aspect_ratio(lm, per_eye=True) -> [..., 2]  (left, right)
  mouth_openness(lm [..., 478, 2|3]) -> [...]     mean inner-lip gap / mouth-corner width (0 = closed)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from avatar.data.schema import NUM_LANDMARKS

_HERE = Path(__file__).resolve().parent

LIPS_OUTER = np.array([61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39,
                       40, 185], np.int64)
LIPS_INNER = np.array([78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81,
                       80, 191], np.int64)
LEFT_EYE = np.array([263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466],
                    np.int64)
RIGHT_EYE = np.array([33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246],
                     np.int64)
LEFT_BROW = np.array([276, 283, 282, 295, 285, 336, 296, 334, 293, 300], np.int64)
RIGHT_BROW = np.array([46, 53, 52, 65, 55, 107, 66, 105, 63, 70], np.int64)
FACE_OVAL = np.array([10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
                      377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103,
                      67, 109], np.int64)
NOSE = np.array([168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 98, 97, 326, 327, 64, 48, 115, 220, 45, 294,
                 278, 344, 440, 275], np.int64)
LEFT_IRIS = np.array([473, 474, 475, 476, 477], np.int64)
RIGHT_IRIS = np.array([468, 469, 470, 471, 472], np.int64)

# Upper-lid / lower-lid landmark pairs and eye corners used by the eye aspect ratio (Soukupova & Cech
# 2016, six-point EAR mapped onto the mediapipe eye contour).
_EYE_EAR = {
    "left": (362, 263, ((385, 380), (387, 373))),   # corners (inner, outer), vertical pairs
    "right": (133, 33, ((160, 144), (158, 153))),
}
# Inner-lip vertical pairs (upper, lower), left-to-right in the image, and the mouth corners.
_MOUTH_PAIRS = ((82, 87), (13, 14), (312, 317))
_MOUTH_CORNERS = (61, 291)

# Lip and lid halves, listed so that UPPER[k] sits above LOWER[k] (the procedural head closes the
# eyes and opens the mouth with them).
LOWER_LIP_OUTER = np.array([146, 91, 181, 84, 17, 314, 405, 321, 375], np.int64)
LOWER_LIP_INNER = np.array([95, 88, 178, 87, 14, 317, 402, 318, 324], np.int64)
UPPER_LIP_INNER = np.array([191, 80, 81, 82, 13, 312, 311, 310, 415], np.int64)
LEFT_EYE_UPPER = np.array([466, 388, 387, 386, 385, 384, 398], np.int64)
LEFT_EYE_LOWER = np.array([249, 390, 373, 374, 380, 381, 382], np.int64)
RIGHT_EYE_UPPER = np.array([246, 161, 160, 159, 158, 157, 173], np.int64)
RIGHT_EYE_LOWER = np.array([7, 163, 144, 145, 153, 154, 155], np.int64)
NOSE_TIP = 1
CHIN = 152
FOREHEAD = 10

_CACHE: dict[str, np.ndarray] = {}


def _load(name: str, dtype) -> np.ndarray:
    if name not in _CACHE:
        path = _HERE / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; regenerate it with scripts/make_canonical_face.py")
        arr = np.load(path).astype(dtype)
        arr.setflags(write=False)
        _CACHE[name] = arr
    return _CACHE[name]


def canonical() -> np.ndarray:
    """[478, 3] float32 read-only canonical landmarks (same array as CANONICAL)."""
    return _load("canonical_face.npy", np.float32)


def triangles() -> np.ndarray:
    """[T, 3] int64 read-only tessellation triangles (same array as TRIANGLES)."""
    return _load("canonical_face_tris.npy", np.int64)


def __getattr__(name: str):  # lazy module attributes: CANONICAL, TRIANGLES (PEP 562)
    if name == "CANONICAL":
        return canonical()
    if name == "TRIANGLES":
        return triangles()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _dist(lm, a: int, b: int):
    d = lm[..., a, :] - lm[..., b, :]
    return (d * d).sum(-1) ** 0.5


def _check(lm, fn: str) -> None:
    shape = tuple(lm.shape)
    if len(shape) < 2 or shape[-2] != NUM_LANDMARKS or shape[-1] not in (2, 3):
        raise ValueError(f"{fn}: landmarks must have shape [..., {NUM_LANDMARKS}, 2|3], got {shape}")


def eye_aspect_ratio(lm, per_eye: bool = False):
    """Eye aspect ratio of landmarks [..., 478, 2|3] (numpy or torch) -> [...] (mean) or [..., 2] (left, right).

    EAR = (|p2-p6| + |p3-p5|) / (2 |p1-p4|): about 0.25-0.3 for open eyes, near 0.05 when closed.
    """
    _check(lm, "eye_aspect_ratio")
    ears = []
    for side in ("left", "right"):
        c0, c1, pairs = _EYE_EAR[side]
        v = sum(_dist(lm, a, b) for a, b in pairs)
        ears.append(v / (2.0 * _dist(lm, c0, c1) + 1e-12))
    if per_eye:
        if isinstance(lm, np.ndarray):
            return np.stack(ears, -1)
        import torch

        return torch.stack(ears, -1)
    return 0.5 * (ears[0] + ears[1])


def mouth_openness(lm):
    """Scale-free mouth opening of landmarks [..., 478, 2|3] (numpy or torch) -> [...].

    Mean of three inner-lip gaps (upper to lower inner lip) divided by the mouth-corner distance.
    """
    _check(lm, "mouth_openness")
    gap = sum(_dist(lm, a, b) for a, b in _MOUTH_PAIRS) / len(_MOUTH_PAIRS)
    return gap / (_dist(lm, *_MOUTH_CORNERS) + 1e-12)
