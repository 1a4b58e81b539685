"""Audio in and out: any format ffmpeg reads -> mono float32 at 16 kHz; 16-bit PCM wav out.

load_audio(path, sr=SAMPLE_RATE) -> np.float32 [S]
    wav/flac/ogg (Vorbis, Opus)/mp3/aac/m4a/mp4/mov/webm..., any sample rate, bit depth (24-bit incl.)
    and channel count; each channel resampled by ffmpeg (swresample), then averaged (the downmix is the
    mean of the channels); at most `max_seconds` (default MAX_AUDIO_SECONDS = 1 hour; math.inf: no
    limit), refused before decoding. Raises AudioError naming the file when it is missing, empty, unreadable, has no audio stream, or
    decodes to no samples. A file that is truncated mid-stream decodes up to the damage and warns.
save_wav(path, wav [S] float32, sr)
    16-bit PCM mono wav, values clipped to [-1, 1], written atomically (avatar.io.atomic).
"""
from __future__ import annotations

import math
import subprocess
import textwrap
import warnings
import wave
from pathlib import Path
from typing import Optional

import numpy as np

from avatar.io.atomic import atomic_path
from avatar.media.ffmpeg import MediaError, check_input, ffmpeg_exe
from avatar.media.timeline import SAMPLE_RATE


class AudioError(MediaError):
    """An audio file (or a file's audio stream) could not be read or written."""


MAX_AUDIO_SECONDS = 3600.0
"""The longest audio load_audio decodes by default (1 hour: 230 MB at 16 kHz mono float32); longer input
is refused before decoding, naming the file, its length and this limit."""


def _wav_channels(data: bytes):
    """(channels, offset of the samples) of the float32 wav ffmpeg streams to a pipe."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, ch = 12, None
    while pos + 8 <= len(data):
        tag, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if tag == b"fmt ":
            ch = int.from_bytes(data[pos + 10:pos + 12], "little")
        elif tag == b"data":
            return (ch, pos + 8) if ch else None
        pos += 8 + size + (size & 1)
    return None


def load_audio(path, sr: int = SAMPLE_RATE, max_seconds: Optional[float] = None) -> np.ndarray:
    """Decode the first audio stream of `path` to mono float32 at `sr` Hz -> [S]. The channels are
    resampled as they are and averaged here (mean of channels: a stereo or 8-channel file keeps the level
    of one channel, never clips; ffmpeg's own -ac 1 downmix adds them at -3 dB each, +3 dB for stereo)."""
    if not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise AudioError(f"load_audio: sr must be a positive int, got {sr!r}")
    p = check_input(path, AudioError)
    if max_seconds is None:
        max_seconds = MAX_AUDIO_SECONDS
    if math.isfinite(max_seconds):
        from avatar.media.probe import probe

        dur = probe(p, AudioError, count_frames=False).duration
        if dur is not None and dur > max_seconds:
            raise AudioError(f"{p}: {dur / 60:.1f} min of audio is longer than the {max_seconds / 60:g} min "
                             f"this command accepts; cut it into shorter parts (e.g. ffmpeg -ss/-t)")
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-i", str(p),
           "-map", "0:a:0", "-vn", "-ar", str(int(sr)), "-f", "wav", "-acodec", "pcm_f32le", "pipe:1"]
    if math.isfinite(max_seconds):
        cmd[-1:-1] = ["-t", f"{max_seconds + 1:.3f}"]
    res = subprocess.run(cmd, capture_output=True, check=False)
    lines = [ln.strip() for ln in res.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    msg = textwrap.shorten(" | ".join(lines[-3:]), 300, placeholder=" ...")  # whole words, never cut mid-word
    if res.returncode != 0:
        if any("matches no streams" in ln for ln in lines):
            raise AudioError(f"{p}: no audio stream in this file (expected a file with sound)")
        raise AudioError(f"{p}: cannot decode audio: {msg or 'ffmpeg failed'}")
    head = _wav_channels(res.stdout[:4096]) if res.returncode == 0 and res.stdout else None
    if head is None and res.returncode == 0 and res.stdout:
        raise AudioError(f"{p}: cannot decode audio: ffmpeg wrote no wav header")
    ch, off = head or (1, 0)
    body = res.stdout[off:]
    body = body[:len(body) // (4 * ch) * 4 * ch]
    wav = np.frombuffer(body, dtype="<f4").reshape(-1, ch).mean(axis=1, dtype=np.float32)
    if wav.size > max_seconds * sr:
        raise AudioError(f"{p}: longer than the {max_seconds / 60:g} min of audio this command accepts; "
                         f"cut it into shorter parts (e.g. ffmpeg -ss/-t)")
    if wav.size == 0:
        raise AudioError(f"{p}: the audio stream decoded to no samples{': ' + msg if msg else ''}")
    if not np.isfinite(wav).all():
        raise AudioError(f"{p}: decoded audio contains NaN/inf samples")
    if msg:
        warnings.warn(f"{p}: audio decoded with errors (truncated or damaged?), "
                      f"{wav.size / sr:.2f} s kept: {msg}", stacklevel=2)
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
