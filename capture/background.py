"""Background plate: per-pixel temporal median of the pixels that are not the person, over a
subset of frames; pixels never seen (always behind the person) are filled smoothly from the
seen ones (push-pull pyramid interpolation)."""
from __future__ import annotations

from typing import Iterable, Tuple

import numpy as np

from avatar.data.schema import LABELS


def background_plate(frames_masks: Iterable[Tuple[np.ndarray, np.ndarray]], dilate: int | None = None) -> Tuple[np.ndarray, float]:
    """frames_masks: (frame uint8 [H, W, 3], labels uint8 [H, W]) pairs -> (plate uint8 [H, W, 3],
    fraction of pixels never seen and filled). The person (labels != background) is grown by `dilate` pixels
    (default ~2% of the frame) before it is excluded."""
    import cv2

    stack, valid = [], []
    kernel = None
    for img, lab in frames_masks:
        if kernel is None:  # grow the person by ~2% of the frame: hair wisps escape the segmentation
            d = dilate or max(3, int(round(0.02 * max(lab.shape))) | 1)
            kernel = np.ones((d, d), np.uint8)
        stack.append(img)
        valid.append(cv2.dilate((lab != LABELS["background"]).astype(np.uint8), kernel) == 0)
    if not stack:
        raise ValueError("background_plate: no frames")
    S = np.stack(stack)                      # [N, H, W, 3] uint8
    V = np.stack(valid)                      # [N, H, W] bool
    N, H, W, _ = S.shape
    seen = V.any(0)
    count = V.sum(0)                                       # [H, W] valid samples per pixel
    mid = np.maximum(count - 1, 0) // 2                    # lower median index among valid samples
    plate = np.zeros((H, W, 3), np.uint8)
    step = max(1, (1 << 21) // max(1, N * W * 3))         # rows per block (bounded memory)
    for y in range(0, H, step):
        blk = S[:, y:y + step].astype(np.uint16)
        blk[~V[:, y:y + step]] = 1000                      # invalid samples sort last
        blk.sort(axis=0)
        m = mid[y:y + step][None, :, :, None].repeat(3, axis=3)
        plate[y:y + step] = np.take_along_axis(blk, m, axis=0)[0].clip(0, 255).astype(np.uint8)
    frac = float((~seen).mean())
    if frac == 1:
        return np.median(S, 0).astype(np.uint8), frac
    if frac > 0:
        filled = push_pull_fill(plate.astype(np.float32), seen.astype(np.float32))
        plate = np.where(seen[..., None], plate, filled.round().clip(0, 255).astype(np.uint8))
    return plate, frac


def push_pull_fill(img: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Fill pixels with weight 0 by a smooth pyramid interpolation of the known ones (push-pull:
    weighted downsampling until everything is covered, then upsampling into the holes).
    img [H, W, C] float32, weight [H, W] in [0, 1] -> [H, W, C]."""
    import cv2

    h, w = weight.shape
    if min(h, w) <= 1 or weight.min() > 0:
        return img
    wi = img * weight[..., None]
    small_w = cv2.resize(weight, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)
    small_i = cv2.resize(wi, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)
    known = small_w > 1e-6
    small = np.zeros_like(small_i)
    small[known] = small_i[known] / small_w[known][:, None]
    coarse = push_pull_fill(small, known.astype(np.float32))
    up = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)
    up = cv2.GaussianBlur(up, (5, 5), 0)
    return np.where(weight[..., None] > 0, img, up)
