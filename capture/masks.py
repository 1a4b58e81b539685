"""Label masks from the person segmentation and the face landmarks (labels: avatar.data.LABELS).

person   mediapipe selfie segmentation (general model, run at its native 256x256 input)
face     filled face-oval polygon (label 2), mouth interior = filled inner-lip polygon (label 3)
torso    person pixels below the jaw line (label 4): the lower face-oval curve from ear to ear,
         continued outward and downward (in the face's own up direction)
head     the remaining person pixels (hair, ears, ...; label 1)
"""
from __future__ import annotations

import numpy as np

from avatar.data import LABELS, face_model

# lower face-oval from the subject's right ear (image left, 234) via the chin (152) to 454
_OVAL = list(face_model.FACE_OVAL)
_JAW = np.array(_OVAL[_OVAL.index(454):_OVAL.index(234) + 1], np.int64)  # 454 -> ... -> 152 -> ... -> 234


class PersonSegmenter:
    """mediapipe SelfieSegmentation (model 0, 256x256) -> person probability at the frame size."""

    def __init__(self):
        from .noise import import_mediapipe

        mp = import_mediapipe()

        self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        import cv2

        h, w = frame.shape[:2]
        small = cv2.resize(frame, (256, 256), interpolation=cv2.INTER_AREA)
        prob = self._seg.process(small).segmentation_mask  # [256, 256] float32
        return cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)

    def close(self) -> None:
        self._seg.close()


def label_mask(person: np.ndarray, lm2d: np.ndarray | None) -> np.ndarray:
    """person [H, W] bool, lm2d [478, 2] px or None -> uint8 [H, W] labels."""
    import cv2

    h, w = person.shape
    m = np.where(person, LABELS["head"], LABELS["background"]).astype(np.uint8)
    if lm2d is None:
        return m
    jaw = lm2d[_JAW].astype(np.float64)
    up = lm2d[face_model.FOREHEAD] - lm2d[face_model.CHIN]
    up = up / (np.linalg.norm(up) + 1e-9)
    side = np.array([-up[1], up[0]])           # perpendicular to up
    big = 4.0 * max(h, w)
    a, b = jaw[0], jaw[-1]                      # the two ends of the jaw curve (near the ears)
    # below the ears the side boundary drops by a third of the face height before turning outward,
    # so hair beside the jaw stays "head" while the shoulders are "torso"
    drop = -up * (np.linalg.norm(lm2d[face_model.FOREHEAD] - lm2d[face_model.CHIN]) / 3.0)
    sa, sb = np.sign(np.dot(a - b, side)) * side, np.sign(np.dot(b - a, side)) * side
    poly = np.vstack([jaw, b + drop, b + drop + sb * big, b + drop + sb * big - up * big,
                      a + drop + sa * big - up * big, a + drop + sa * big, a + drop])
    torso = np.zeros((h, w), np.uint8)
    cv2.fillPoly(torso, [np.round(poly * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    m[(torso > 0) & person] = LABELS["torso"]
    # the face and mouth polygons (pixel centres at +0.5: shift by -0.5 to pixel-index coordinates)
    to_idx = lambda p: np.round((p - 0.5) * 16).astype(np.int32)  # noqa: E731
    cv2.fillPoly(m, [to_idx(lm2d[face_model.FACE_OVAL])], LABELS["face"], shift=4)
    cv2.fillPoly(m, [to_idx(lm2d[face_model.LIPS_INNER])], LABELS["mouth"], shift=4)
    return m
