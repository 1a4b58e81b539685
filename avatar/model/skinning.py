"""Side-aware landmark skinning: which expression landmarks move which Gaussian, and how much.

Each face/mouth Gaussian i follows the displacements d_k [K,3] of the motion codes' landmarks p_k with
RBF weights w_ik = exp(-|x_i - p_k|^2 / 2 sigma^2), normalised by max(1, sum_k w_ik). Plain RBF weights
blend across a closed seam: the upper and lower inner lip sit ~5 mm apart at rest, inside one sigma, so a
Gaussian on the upper lip also takes the lower lip's downward motion and the rendered opening shrinks to a
fraction of the tracked one (measured on a trained real-person avatar: Gaussians at the two inner-lip
landmarks separated by 2.4 mm while the landmarks opened 10.9 mm). So each seam — the mouth and the two
eyelid slits — splits its landmarks into an upper and a lower half (mediapipe topology), and a Gaussian
takes no weight from the half on the other side of its nearest seam point ("other side" along the face's
up axis, chin -> forehead). Landmarks that belong to no seam half (corners, brows, jaw) weigh everywhere.

    rig = seam_rig(landmarks478, indices)              # tensors, stored as AvatarModel buffers
    w = skin_weights(means, rig["points"], sigma, ...)  # [N,K]
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import torch

from avatar.data import face_model as fm

_UPPER_LIP_OUTER = np.array([185, 40, 39, 37, 0, 267, 269, 270, 409], np.int64)
# (upper half, lower half, corners) of each seam; seam ids are positions in this tuple
SEAMS = (
    (np.concatenate([fm.UPPER_LIP_INNER, _UPPER_LIP_OUTER]), np.concatenate([fm.LOWER_LIP_INNER,
                                                                             fm.LOWER_LIP_OUTER]),
     (78, 308, 61, 291)),
    (fm.RIGHT_EYE_UPPER, fm.RIGHT_EYE_LOWER, (33, 133)),
    (fm.LEFT_EYE_UPPER, fm.LEFT_EYE_LOWER, (263, 362)),
)
# seam points: midpoints of the inner upper/lower pairs (UPPER[k] above LOWER[k]) plus the corners
_PAIRS = ((fm.UPPER_LIP_INNER, fm.LOWER_LIP_INNER), (fm.RIGHT_EYE_UPPER, fm.RIGHT_EYE_LOWER),
          (fm.LEFT_EYE_UPPER, fm.LEFT_EYE_LOWER))
NUM_SEAM_POINTS = sum(len(u) + len(s[2]) for (u, _), s in zip(_PAIRS, SEAMS))


def seam_rig(landmarks: np.ndarray, indices: Sequence[int]) -> Dict[str, torch.Tensor]:
    """Skinning rig of one person from their neutral landmarks [478,3] (head frame) and the motion space's
    landmark indices [K]: points [K,3], side [K] (+1 upper half, -1 lower half, 0 none), seam_of [K]
    (seam id or -1), seam_points [S,3], seam_ids [S], up [3] (unit, chin -> forehead)."""
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (478, 3):
        raise ValueError(f"seam_rig: landmarks must be [478, 3], got {list(lm.shape)}")
    idx = [int(i) for i in indices]
    side, seam_of = np.zeros(len(idx), np.int64), np.full(len(idx), -1, np.int64)
    for s, (upper, lower, _) in enumerate(SEAMS):
        for k, i in enumerate(idx):
            if i in upper:
                side[k], seam_of[k] = 1, s
            elif i in lower:
                side[k], seam_of[k] = -1, s
    pts, ids = [], []
    for s, ((upper, lower), (_, _, corners)) in enumerate(zip(_PAIRS, SEAMS)):
        pts += [0.5 * (lm[u] + lm[l]) for u, l in zip(upper, lower)] + [lm[c] for c in corners]
        ids += [s] * (len(upper) + len(corners))
    up = lm[fm.FOREHEAD] - lm[fm.CHIN]
    up = up / max(float(np.linalg.norm(up)), 1e-9)
    f32 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)
    return {"points": f32(lm[idx]), "side": torch.as_tensor(side), "seam_of": torch.as_tensor(seam_of),
            "seam_points": f32(np.stack(pts)), "seam_ids": torch.as_tensor(np.asarray(ids, np.int64)),
            "up": f32(up)}


def skin_weights(means: torch.Tensor, points: torch.Tensor, sigma: float, seam_points: torch.Tensor,
                 seam_ids: torch.Tensor, up: torch.Tensor, side: torch.Tensor,
                 seam_of: torch.Tensor) -> torch.Tensor:
    """[N,K] normalised skinning weights of Gaussians at `means` [N,3] (see the module docstring). A rig
    without seams (all `side` 0, e.g. an older checkpoint) gives the plain RBF weights."""
    w = torch.exp(-torch.cdist(means, points).square() / (2.0 * sigma ** 2))  # [N,K]
    if seam_points.shape[0]:
        j = torch.cdist(means, seam_points).argmin(1)                          # [N] nearest seam point
        g_side = torch.sign((means - seam_points[j]) @ up)                      # [N] +1 above, -1 below
        g_seam = seam_ids[j]                                                    # [N]
        other = ((seam_of.unsqueeze(0) == g_seam.unsqueeze(1)) & (side != 0).unsqueeze(0)
                 & (side.unsqueeze(0) == -g_side.unsqueeze(1).long()))         # [N,K]
        w = w.masked_fill(other, 0.0)
    return w / w.sum(1, keepdim=True).clamp_min(1.0)
