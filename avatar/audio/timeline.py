"""The audio timeline of avatar.audio and above: SAMPLE_RATE, num_frames, frame_sample (defined once in
avatar.media.timeline, the lowest layer that needs them, and re-exported here), DriveError, check_chunk."""
from __future__ import annotations
from typing import Any
import numpy as np

from avatar.media.timeline import SAMPLE_RATE, frame_sample, num_frames

__all__ = ["SAMPLE_RATE", "num_frames", "frame_sample", "DriveError", "check_chunk"]


class DriveError(ValueError):
    """Bad input to the driving runtime (names the argument and what was expected)."""


def check_chunk(chunk: Any, name: str = "audio chunk") -> np.ndarray:
    """Validate a mono float audio chunk -> np.float32 [S]."""
    a = np.asarray(chunk)
    if a.ndim != 1:
        raise DriveError(f"{name} must be mono [S] samples, got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise DriveError(f"{name} must be float samples in [-1, 1], got dtype {a.dtype}")
    a = a.astype(np.float32, copy=False)
    if a.size and not np.isfinite(a).all():
        raise DriveError(f"{name} contains NaN or Inf samples")
    return a


def contiguous_audio(wav, fps: float, idx, first_sample: int) -> "np.ndarray | None":
    """The audio [S] under video frames idx (zero-padded past the end), when idx is one contiguous run
    starting at audio sample `first_sample`; None without audio or for a non-contiguous idx."""
    idx = np.asarray(idx)
    if wav is None or len(idx) == 0 or np.any(np.diff(idx) != 1):
        return None
    seg = np.zeros(frame_sample(len(idx), fps), np.float32)
    part = np.asarray(wav[first_sample:first_sample + len(seg)], np.float32)
    seg[:len(part)] = part
    return seg
