"""Minimal 16-bit PCM wav reader (stdlib) for the capture folder's audio.wav (written by
avatar.media.audio.save_wav)."""
from __future__ import annotations

import wave

import numpy as np


def read_wav(path) -> tuple[np.ndarray, int]:
    """Read a 16-bit PCM wav -> (mono float32 [S], sample rate). Multi-channel is averaged."""
    with wave.open(str(path), "rb") as f:
        if f.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM wav, got {8 * f.getsampwidth()}-bit")
        ch, sr, n = f.getnchannels(), f.getframerate(), f.getnframes()
        data = np.frombuffer(f.readframes(n), "<i2").astype(np.float32) / 32768.0
    if ch > 1:
        data = data.reshape(-1, ch).mean(1)
    return data.astype(np.float32), int(sr)
