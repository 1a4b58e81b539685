"""The audio/video timeline rule, defined once for every layer (media, data, audio and above).

SAMPLE_RATE = 16000 Hz mono is the rate of every waveform inside avatar (decoded audio, a capture's
audio.wav, the features, the stream). Video frame t covers [t / fps, (t + 1) / fps) s, i.e. audio
samples [frame_sample(t, fps), frame_sample(t + 1, fps)); a waveform of S samples spans
num_frames(S, fps) frames. `avatar.audio.timeline` re-exports these names (the public door).
Pure Python: importing this module imports nothing else of avatar.
"""
from __future__ import annotations

import math

SAMPLE_RATE = 16000
"""The sample rate (Hz, mono) of every waveform inside avatar."""


def num_frames(num_samples: int, fps: float, sr: int = SAMPLE_RATE) -> int:
    """Video frames covering `num_samples` of audio at `sr` (rounded up; 0 samples -> 0 frames)."""
    if num_samples <= 0:
        return 0
    return max(1, int(math.ceil(num_samples / sr * fps - 1e-6)))


def frame_sample(t: int, fps: float, sr: int = SAMPLE_RATE) -> int:
    """First audio sample of video frame t (frame t covers [t/fps, (t+1)/fps) s)."""
    return int(round(t * sr / fps))
