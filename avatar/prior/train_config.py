"""Training knobs of the motion prior (torch-free: imported by the CLI at parse time)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PriorTrainConfig:
    """How the motion prior is trained (per process: the global batch is batch_size x world size)."""

    steps: int = 3000
    """Optimizer steps."""
    batch_size: int = 16
    """Windows per process per step."""
    window_frames: int = 64
    """Frames per training window (target sequence)."""
    ref_frames: int = 125
    """Frames of the in-context style reference (5 s at 25 fps), taken from the same person,
    disjoint from the target window when the clip is long enough."""
    lr: float = 1e-3
    """Peak AdamW learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_steps: int = 100
    """Linear warm-up steps, then cosine decay to lr_final_fraction * lr."""
    lr_final_fraction: float = 0.05
    """Learning rate at the end of the cosine schedule, as a fraction of lr."""
    grad_clip: float = 1.0
    """Gradient-norm clipping (0 disables)."""
    style_dropout: float = 0.3
    """Probability of replacing the style reference by the learned null style, so the prior also
    works without a reference."""
    style_augment: float = 0.35
    """Style augmentation: each training sample scales its whitened motion latents (target and
    reference alike) by per-component gains exp(U(-a, a)), so the prior sees many more speaking
    styles than identities and must read amplitudes from the reference clip. 0 disables."""
    motion_weight: float = 1.0
    """Weight of the motion-code MSE (in code units, normalised by the total code variance)."""
    velocity_weight: float = 0.5
    """Weight of the frame-to-frame motion-velocity MSE (temporal smoothness and timing)."""
    blink_weight: float = 0.1
    """Weight of the blink BCE."""
    pose_weight: float = 0.1
    """Weight of the (normalised) head-pose MSE."""
    pca_var: float = 0.995
    """Fraction of the training motion-code variance the PCA keeps; 0 = no compression."""
    pca_max_components: int = 32
    """Upper bound on PCA components."""
    seed: int = 0
    """Seed of initialisation and of the (rank-independent) global batch sampler."""
    checkpoint_every: int = 500
    """Write the resumable training checkpoint every N steps (rank 0), and at the end."""
    log_every: int = 50
    """Print the loss every N steps (rank 0)."""
    device: str = "auto"
    """"auto" (cuda if available), "cpu", or "cuda"."""
