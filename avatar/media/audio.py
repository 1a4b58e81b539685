"""Audio in and out: any format ffmpeg reads -> mono float32 at 16 kHz; 16-bit PCM wav out.

load_audio(path, sr=SAMPLE_RATE) -> np.float32 [S]
    wav/flac/ogg (Vorbis, Opus)/mp3/aac/m4a/mp4/mov/webm..., any sample rate, bit depth (24-bit incl.)
    and channel count; channels are averaged (downmix), resampled by ffmpeg (swresample). Raises
    AudioError naming the file when it is missing, empty, unreadable, has no audio stream, or
    decodes to no samples. A file that is truncated mid-stream decodes up to the damage and warns.
save_wav(path, wav [S] float32, sr)
    16-bit PCM mono wav, values clipped to [-1, 1], written atomically (avatar.io.atomic).
"""
from __future__ import annotations

import subprocess
import warnings
import wave
from pathlib import Path

import numpy as np

from avatar.io.atomic import atomic_path
from avatar.media.ffmpeg import MediaError, check_input, ffmpeg_exe
from avatar.media.timeline import SAMPLE_RATE


class AudioError(MediaError):
    """An audio file (or a file's audio stream) could not be read or written."""


def load_audio(path, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode the first audio stream of `path` to mono float32 at `sr` Hz -> [S]."""
    if not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise AudioError(f"load_audio: sr must be a positive int, got {sr!r}")
    p = check_input(path, AudioError)
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-i", str(p),
           "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(int(sr)), "-f", "f32le", "-acodec", "pcm_f32le",
           "pipe:1"]
    res = subprocess.run(cmd, capture_output=True, check=False)
    msg = " | ".join(ln.strip() for ln in res.stderr.decode("utf-8", "replace").splitlines()
                     if ln.strip())[-600:]
    if res.returncode != 0:
        if "matches no streams" in msg:
            raise AudioError(f"{p}: no audio stream in this file (expected a file with sound)")
        raise AudioError(f"{p}: cannot decode audio: {msg or 'ffmpeg failed'}")
    wav = np.frombuffer(res.stdout, dtype="<f4").astype(np.float32)
    if wav.size == 0:
        raise AudioError(f"{p}: the audio stream decoded to no samples{': ' + msg if msg else ''}")
    if not np.isfinite(wav).all():
        raise AudioError(f"{p}: decoded audio contains NaN/inf samples")
    if msg:
        warnings.warn(f"{p}: audio decoded with errors (truncated or damaged?), "
                      f"{wav.size / sr:.2f} s kept: {msg[-200:]}", stacklevel=2)
    return wav


def save_wav(path, wav, sr: int = SAMPLE_RATE) -> None:
    """Write mono `wav` [S] (float, [-1, 1]) as 16-bit PCM at `sr` Hz, atomically."""
    a = np.asarray(wav)
    if a.ndim != 1:
        raise AudioError(f"save_wav({path}): expected a mono waveform of shape [S], got {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise AudioError(f"save_wav({path}): expected float samples in [-1, 1], got dtype {a.dtype}")
    if not np.isfinite(a).all():
        raise AudioError(f"save_wav({path}): waveform contains NaN/inf")
    if not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise AudioError(f"save_wav({path}): sr must be a positive int, got {sr!r}")
    pcm = np.round(np.clip(a, -1.0, 1.0) * 32767.0).astype("<i2")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(p) as tmp, wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sr))
        w.writeframes(pcm.tobytes())
