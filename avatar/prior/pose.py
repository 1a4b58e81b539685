"""Head motion from the prior's pose output: causal smoothing, rotation only.

The pose head predicts [T, 6] (rotation vector, translation) relative to the clip's mean pose
(avatar.prior.data.pose_channels). Audio predicts head rotation only weakly, so the raw prediction is
mostly frame-to-frame noise (2.6 deg/frame median on real speech against 0.2-1 deg in real video) that
variance matching then amplifies. `smooth_pose` low-passes it with a causal exponential moving average
(streamable: no future frames) BEFORE the amplitude calibration, so the calibration matches the
variance of the smoothed motion. Translation is not used: the training captures' translations are in
each capture's own units (the head sits 0.7-8 units from the camera), so they are set to zero and the
runtime turns the head about its own centre (avatar.runtime.sources.head_motion_viewmat).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class PoseConfig:
    """How the prior's raw head-pose output becomes head motion."""

    smooth_frames: float = 4.0
    """Time constant of the causal EMA over the pose, in frames (0 = raw): alpha = 1 / (1 + smooth_frames).
    4 frames (160 ms at 25 fps) gives 1.2 deg/frame (95th percentile) on held-out clips, as real heads move."""

    def __post_init__(self):
        if not self.smooth_frames >= 0:
            raise ValueError(f"PoseConfig.smooth_frames must be >= 0, got {self.smooth_frames}")


def smooth_pose(pose: torch.Tensor, cfg: PoseConfig) -> torch.Tensor:
    """pose [T, C] -> [T, C]: causal EMA y[t] = a * x[t] + (1 - a) * y[t - 1], y[0] = x[0].
    (A numpy loop: ~3 ms for 1800 frames; scipy.signal.lfilter would cost ~0.9 s of import on the
    first drive/serve call.)"""
    if pose.ndim != 2:
        raise ValueError(f"smooth_pose: pose must be [T, C], got {tuple(pose.shape)}")
    if cfg.smooth_frames <= 0 or pose.shape[0] < 2:
        return pose
    a = 1.0 / (1.0 + cfg.smooth_frames)
    x = pose.detach().cpu().double().numpy()
    y = np.empty_like(x)
    y[0] = x[0]
    for t in range(1, len(x)):
        y[t] = a * x[t] + (1.0 - a) * y[t - 1]
    return torch.from_numpy(y).to(pose)


def rotation_only(pose: torch.Tensor) -> torch.Tensor:
    """[T, 6] (rotation vector, translation) -> the same with the translation set to zero."""
    out = pose.clone()
    out[:, 3:] = 0.0
    return out
