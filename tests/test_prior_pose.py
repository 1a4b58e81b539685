"""Head motion from the prior's pose output (avatar.prior.pose): causal EMA, rotation only."""
import pytest
import torch

from avatar.prior.pose import PoseConfig, rotation_only, smooth_pose


def test_smooth_pose_is_a_causal_ema_starting_at_the_first_frame():
    x = torch.zeros(6, 2)
    x[2] = 1.0                                                    # one impulse
    y = smooth_pose(x, PoseConfig(smooth_frames=1.0))             # a = 0.5
    assert torch.allclose(y[:, 0], torch.tensor([0, 0, 0.5, 0.25, 0.125, 0.0625]))
    step = torch.ones(5, 1) * 3.0
    assert torch.allclose(smooth_pose(step, PoseConfig()), step)   # y[0] = x[0]: no ramp from zero
    assert torch.equal(smooth_pose(x, PoseConfig(smooth_frames=0)), x)
    with pytest.raises(ValueError, match=r"\[T, C\]"):
        smooth_pose(torch.zeros(4), PoseConfig())
    with pytest.raises(ValueError, match="smooth_frames"):
        PoseConfig(smooth_frames=-1)


def test_rotation_only_zeroes_the_translation_and_keeps_the_input():
    p = torch.arange(12, dtype=torch.float32).reshape(2, 6)
    r = rotation_only(p)
    assert torch.equal(r[:, :3], p[:, :3]) and torch.all(r[:, 3:] == 0) and p[0, 3] == 3
