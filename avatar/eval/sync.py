"""Audio-only lip-sync metrics: a mouth-opening series [T] against the speech it was driven by.

No ground-truth frames are needed (the cross-driven case). With 16 kHz mono audio and fps:

* speech envelope: per-frame RMS in dB (frame t = audio [t/fps, (t+1)/fps)), floored at
  `ENVELOPE_FLOOR_DB` below the clip's loudest frame so silence does not dominate the correlation.
* `envelope_corr` / `envelope_lag`: the largest Pearson correlation of opening[t] with
  envelope[t - lag] over lag in [-max_lag, max_lag] frames (lag > 0: the mouth follows the audio),
  computed on the overlapping frames, and that lag.
* `envelope_corr_null`: the same with the envelope circularly shifted by half the clip: what an
  unrelated but equally smooth signal scores (the chance level to compare envelope_corr with).
* `speech_silence_ratio`: mean opening on voiced frames / mean opening on silent frames (voiced
  from avatar.audio.vad); None when either set has fewer than `MIN_FRAMES` frames.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from .landmarks import pearson

ENVELOPE_FLOOR_DB = 50.0
MIN_FRAMES = 3


def speech_envelope(wav, fps: float, num_frames: int) -> np.ndarray:
    """[T] per-frame RMS level in dB, floored ENVELOPE_FLOOR_DB below the loudest frame."""
    from avatar.audio.vad import frame_rms_db

    db = frame_rms_db(np.asarray(wav, np.float32), fps, num_frames).astype(np.float64)
    if db.size == 0:
        return db
    return np.maximum(db, db.max() - ENVELOPE_FLOOR_DB)


def lagged_corr(x, env, max_lag: int = 3) -> Tuple[Optional[float], Optional[int]]:
    """(best Pearson corr of x[t] with env[t - lag], that lag) over |lag| <= max_lag."""
    x, env = np.asarray(x, np.float64), np.asarray(env, np.float64)
    if x.shape != env.shape or x.ndim != 1:
        raise ValueError(f"lagged_corr: expected two [T] series, got {x.shape} and {env.shape}")
    T = len(x)
    best, best_lag = None, None
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            a, b = x[lag:], env[:T - lag]
        else:
            a, b = x[:T + lag], env[-lag:]
        c = pearson(a, b)
        if c is not None and (best is None or c > best):
            best, best_lag = c, lag
    return best, best_lag


def speech_silence_ratio(opening, voiced) -> Optional[float]:
    """mean(opening | voiced) / mean(opening | silent), None without MIN_FRAMES of each."""
    o, v = np.asarray(opening, np.float64), np.asarray(voiced, bool)
    if o.shape != v.shape:
        raise ValueError(f"speech_silence_ratio: opening {o.shape} and voiced {v.shape} differ")
    ok = np.isfinite(o)
    on, off = o[ok & v], o[ok & ~v]
    if len(on) < MIN_FRAMES or len(off) < MIN_FRAMES or off.mean() <= 1e-12:
        return None
    return float(on.mean() / off.mean())


def audio_sync(opening, wav, fps: float, voiced=None, max_lag: int = 3) -> Dict[str, Optional[float]]:
    """All audio-only sync metrics of an opening series [T] (see module docstring).

    voiced: [T] bool from avatar.audio.vad (None: speech_silence_ratio is None)."""
    o = np.asarray(opening, np.float64)
    T = len(o)
    env = speech_envelope(wav, fps, T)
    c, lag = lagged_corr(o, env, max_lag)
    c0, _ = lagged_corr(o, np.roll(env, T // 2), max_lag)
    out = {"envelope_corr": c, "envelope_lag": lag, "envelope_corr_null": c0,
           "speech_silence_ratio": None, "voiced_frames": None, "silent_frames": None}
    if voiced is not None:
        v = np.asarray(voiced, bool)
        out["speech_silence_ratio"] = speech_silence_ratio(o, v)
        out["voiced_frames"] = int(v.sum())
        out["silent_frames"] = int((~v).sum())
    return out
