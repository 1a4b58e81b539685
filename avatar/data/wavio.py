"""Minimal 16-bit PCM wav read/write (stdlib) for the capture folder's audio.wav."""
from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np


def write_wav(path, wav: np.ndarray, sr: int) -> None:
    """Write mono float32 [S] in [-1, 1] as 16-bit PCM, atomically (tmp file + os.replace)."""
    path = Path(path)
    wav = np.asarray(wav, np.float32).reshape(-1)
    pcm = (np.clip(wav, -1.0, 1.0) * 32767.0).round().astype("<i2")
    tmp = path.with_name(path.name + ".tmp")
    with wave.open(str(tmp), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(int(sr))
        f.writeframes(pcm.tobytes())
    os.replace(tmp, path)


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
