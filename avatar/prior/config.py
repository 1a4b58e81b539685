"""Configuration of the generic motion prior (torch-free, so `avatar --help` stays fast).

MotionPriorConfig (the network) and PriorTrainConfig (its training); the network lives in
avatar.prior.model, the trainer in avatar.prior.trainer.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict


@dataclass
class MotionPriorConfig:
    """Architecture of the audio -> motion prior (a causal temporal transformer)."""

    audio_dim: int = 80
    """D of the per-frame audio features (log-mel of avatar.audio.features.frame_features, normalised
    per clip by avatar.prior.data.audio_clip_features). Set from the data."""
    pitch_dim: int = 4
    """Per-frame prosody features (avatar.prior.data.audio_clip_features): log-F0 (speaker-centred),
    voicing, log-energy (clip-normalised) and voice activity (Silero VAD, avatar.audio.vad); 0 disables."""
    code_dim: int = 16
    """Dimension the network predicts: the (PCA-compressed, whitened) motion-code space. Set from the data."""
    pose_dim: int = 6
    """Head-pose channel: rotation vector + translation relative to the clip's mean pose."""
    d_model: int = 64
    """Width of the transformer."""
    num_layers: int = 2
    """Number of causal transformer blocks."""
    num_heads: int = 4
    """Attention heads per block."""
    ff_mult: int = 4
    """Feed-forward hidden size = ff_mult * d_model."""
    dropout: float = 0.2
    """Dropout inside the blocks (training only)."""
    past_frames: int = 24
    """Each attention layer sees this many past frames (and none in the future)."""
    lookahead_frames: int = 4
    """Total look-ahead of the whole model in frames (all of it in the conv front-end), so a
    streaming caller needs only this many future frames of audio."""
    conv_kernel: int = 9
    """Kernel of the temporal conv front-end over audio features (must be > lookahead_frames)."""
    style: bool = False
    """In-context style tokens from a reference clip (audio features + motion codes) of the target person.
    Off by default: the targets are per-clip centred and scaled, so a person's style is their mean and
    spread of motion, applied outside the network (MotionPrior.personalise); see the model card."""
    style_tokens: int = 4
    """Number of style tokens the style encoder pools the reference clip into."""
    style_layers: int = 2
    """Transformer blocks of the style encoder."""

    members: int = 1
    """Independently initialised networks whose outputs are averaged (a deep ensemble; each member draws
    its own batches and augmentation, has its own loss term and its own gradient clipping; the training
    loss is the members' mean, a 1/members scale that AdamW's update ignores). Trained on ~30 voices a
    single network's score on unseen people moves by +-0.03 correlation with its seed; the average of 3 is
    steadier and better (model card). 1 = one network (checkpoints of one network load unchanged)."""

    def validate(self) -> None:
        if self.members < 1:
            raise ValueError(f"MotionPriorConfig: members must be >= 1, got {self.members}")
        if self.members > 1 and self.style:
            raise ValueError("MotionPriorConfig: an ensemble (members > 1) has no style input; set style=False")
        if self.d_model % self.num_heads:
            raise ValueError(f"MotionPriorConfig: d_model={self.d_model} must be a multiple of num_heads={self.num_heads}")
        if self.conv_kernel <= self.lookahead_frames:
            raise ValueError(f"MotionPriorConfig: conv_kernel={self.conv_kernel} must exceed "
                             f"lookahead_frames={self.lookahead_frames}")
        for name in ("audio_dim", "code_dim", "d_model", "num_layers", "num_heads", "past_frames"):
            if getattr(self, name) <= 0:
                raise ValueError(f"MotionPriorConfig: {name} must be > 0, got {getattr(self, name)}")
        if self.lookahead_frames < 0 or self.pitch_dim < 0:
            raise ValueError("MotionPriorConfig: lookahead_frames and pitch_dim must be >= 0")

    def receptive_past(self) -> int:
        """Frames of past context that can influence one output (exact chunked inference needs them)."""
        return self.num_layers * self.past_frames + (self.conv_kernel - 1 - self.lookahead_frames)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "MotionPriorConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"MotionPriorConfig: unknown fields {sorted(unknown)} (checkpoint from a newer version?)")
        return cls(**d)


@dataclass
class PriorTrainConfig:
    """How the motion prior is trained (per process: the global batch is batch_size x world size)."""

    steps: int = 1200
    """Optimizer steps."""
    batch_size: int = 16
    """Windows per process per step."""
    window_frames: int = 48
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
    style_augment: float = 0.0
    """Style augmentation: each training sample scales its whitened motion latents (target and
    reference alike) by per-component gains exp(U(-a, a)), so the prior sees many more speaking
    styles than identities and must read amplitudes from the reference clip. 0 disables."""
    vtlp: float = 0.0
    """Speaker augmentation (avatar.prior.augment): each training window's mel axis is warped by
    exp(U(-vtlp, vtlp)) (vocal-tract-length perturbation). 0 disables."""
    freq_mask: int = 0
    """Speaker augmentation (avatar.prior.augment): each training window has one block of up to this
    many adjacent mel bands masked (SpecAugment frequency masking). 0 disables."""
    speed: float = 0.0
    """Speed perturbation (avatar.prior.augment): each training window is taken from
    window_frames x exp(U(-speed, speed)) source frames and resampled to window_frames, audio
    features and motion alike (a faster or slower talker). 0 disables."""
    motion_weight: float = 1.0
    """Weight of the motion-code MSE (in code units, normalised by the total code variance)."""
    velocity_weight: float = 0.5
    """Weight of the frame-to-frame motion-velocity MSE (temporal smoothness and timing)."""
    blink_weight: float = 0.1
    """Weight of the blink BCE."""
    pose_weight: float = 0.1
    """Weight of the (normalised) head-pose MSE."""
    open_weight: float = 3.0
    """Weight of the mouth-opening MSE (the opening read off the predicted codes by the linear map
    fitted on the training clips, in units of its variance)."""
    ema: float = 0.0
    """Exponential moving average of the network weights (Polyak averaging; decay per step, e.g. 0.995):
    the saved prior carries the averaged weights, an ensemble over the end of the trajectory that is
    less noisy on unseen people than the last step's. 0 disables (the last step's weights)."""
    pca_var: float = 0.98
    """Fraction of the training motion-code variance the PCA keeps; 0 = no compression."""
    pca_max_components: int = 24
    """Upper bound on PCA components."""
    seed: int = 0
    """Seed of initialisation and of the (rank-independent) global batch sampler."""
    checkpoint_every: int = 500
    """Write the resumable training checkpoint every N steps (rank 0), and at the end."""
    log_every: int = 50
    """Print the loss every N steps (rank 0)."""
    device: str = "auto"
    """"auto" (cuda if available), "cpu", or "cuda"."""
