"""Streamed audio DSP (no torch at import): conditioners that turn audio chunks into one row per
video frame, in order, identical to the offline computation.

* `MouthEnvelope` (`EnvelopeConfig`): a mouth opening in [0, 1] from the audio level (procedural head).
* `StreamingMelFeatures`: per-frame log-mel features equal to avatar.audio.features.frame_features
  of the whole audio; `WholeAudioFeatures`: any feature kind, computed once at the end (offline).
* `StreamResampler`: any input rate -> 16 kHz, chunk by chunk (anti-aliased polyphase FIR).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from avatar.audio.timeline import (
    SAMPLE_RATE,
    DriveError,
    check_chunk,
    frame_sample,
    num_frames,
)


# ----------------------------------------------------------------------------- conditioners
@dataclass
class EnvelopeConfig:
    """Mouth opening from the audio level (procedural head), with automatic gain: levels are
    measured against a running peak, so loud and quiet recordings both move the mouth."""

    window_ms: float = 60.0
    """RMS window ending at the end of each frame's audio interval."""
    gate_db: float = -55.0
    """Level (dBFS RMS) below which the mouth is closed whatever the gain."""
    range_db: float = 24.0
    """The mouth opens over the levels from (peak - range_db) to (peak - headroom_db)."""
    headroom_db: float = 4.0
    """Fully open this far below the running peak."""
    peak_decay_db: float = 0.1
    """How fast the running peak falls per frame (dB), to follow a quieter speaker."""
    initial_peak_db: float = -20.0
    """Running peak at the start of a stream."""
    release: float = 0.5
    """Per-frame decay factor when the level falls (0 = instant, closer to 1 = slower)."""


class MouthEnvelope:
    """Conditioner: frame t -> [mouth_open] in [0, 1] from the RMS level of the audio that ends at
    frame t's end (no look-ahead). Deterministic regardless of how the audio is chunked."""

    def __init__(self, fps: float, cfg: Optional[EnvelopeConfig] = None):
        self.fps, self.cfg = float(fps), cfg or EnvelopeConfig()
        self.win = max(1, int(round(self.cfg.window_ms * SAMPLE_RATE / 1000)))
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros(0, np.float32)
        self._buf0 = 0  # absolute index of _buf[0]
        self._t = 0
        self._level = 0.0
        self._peak = self.cfg.initial_peak_db

    def _row(self, t: int) -> np.ndarray:
        c = self.cfg
        end = frame_sample(t + 1, self.fps)
        lo = max(0, end - self.win)
        seg = self._buf[max(0, lo - self._buf0): max(0, end - self._buf0)]
        rms = float(np.sqrt(np.mean(np.square(seg, dtype=np.float64)))) if seg.size else 0.0
        db = 20 * math.log10(rms + 1e-9)
        self._peak = max(db, self._peak - c.peak_decay_db, c.gate_db + c.range_db)
        if db < c.gate_db:
            target = 0.0
        else:
            target = (db - (self._peak - c.range_db)) / max(1e-6, c.range_db - c.headroom_db)
            target = min(1.0, max(0.0, target))
        self._level = target if target >= self._level else \
            c.release * self._level + (1 - c.release) * target
        return np.array([self._level], np.float32)

    def push(self, wav: np.ndarray) -> List[np.ndarray]:
        self._buf = np.concatenate([self._buf, wav])
        received = self._buf0 + len(self._buf)
        rows = []
        while frame_sample(self._t + 1, self.fps) <= received:
            rows.append(self._row(self._t))
            self._t += 1
        keep = max(0, frame_sample(self._t + 1, self.fps) - self.win - self._buf0)
        if keep:
            self._buf = self._buf[keep:]
            self._buf0 += keep
        return rows

    def finish(self) -> List[np.ndarray]:
        total = num_frames(self._buf0 + len(self._buf), self.fps)
        rows = []
        while self._t < total:
            rows.append(self._row(self._t))
            self._t += 1
        return rows


class StreamingMelFeatures:
    """Conditioner: per-frame audio features of streamed audio, equal (to float rounding) to
    avatar.audio.features.frame_features(whole audio, fps, num_frames(S), cfg) — kind "mel" only.

    Log-mel frame j is centred at sample j*hop with an n_fft window, so it is final once samples
    up to j*hop + n_fft/2 have arrived; each segment is analysed with enough history that its
    reflect padding never touches a kept frame (except at the very start and end, where the
    offline computation pads the same way). Video frame t averages the mel frames centred in
    [t/fps, (t+1)/fps) like `align_to_frames`."""

    def __init__(self, fps: float, cfg=None):
        from avatar.audio.features import AudioFeatureConfig

        self.cfg = cfg or AudioFeatureConfig()
        if self.cfg.kind != "mel":
            raise DriveError(f"streaming features support kind='mel' only, got {self.cfg.kind!r}")
        self.fps = float(fps)
        self.hop = int(round(self.cfg.hop_ms * SAMPLE_RATE / 1000))
        self.half = self.cfg.n_fft // 2
        self.rate = 1000.0 / self.cfg.hop_ms
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros(0, np.float32)
        self._buf0 = 0
        self._mels: List[np.ndarray] = []  # exact mel frames [self._mel0, ...)
        self._mel0 = 0
        self._t = 0

    @property
    def _received(self) -> int:
        return self._buf0 + len(self._buf)

    def _compute(self, final: bool) -> None:
        import torch

        from avatar.audio.features import log_mel

        j0 = self._mel0 + len(self._mels)  # first mel frame not computed yet
        S = self._received
        if final:
            j1 = S // self.hop + 1  # offline count (center=True)
        else:
            j1 = (S - self.half) // self.hop + 1 if S >= self.half else 0
        if j1 <= j0:
            return
        a = 0 if j0 * self.hop < self.half + self.hop else \
            ((j0 * self.hop - self.half) // self.hop - 1) * self.hop
        b = S if final else min(S, (j1 - 1) * self.hop + self.half)
        if a < self._buf0:
            raise AssertionError("streaming mel: audio history trimmed too early")
        seg = torch.from_numpy(np.ascontiguousarray(self._buf[a - self._buf0: b - self._buf0]))
        mel = log_mel(seg, self.cfg).numpy().astype(np.float64)  # [T, n_mels], frame m at a + m*hop
        m0 = (j0 * self.hop - a) // self.hop
        self._mels.extend(mel[m0: m0 + (j1 - j0)])

    def _rows(self, final: bool) -> List[np.ndarray]:
        rows = []
        have = self._mel0 + len(self._mels)
        T = have if final else None
        total = num_frames(self._received, self.fps) if final else None
        while True:
            t = self._t
            if final and t >= total:
                break
            lo = math.ceil(t / self.fps * self.rate)
            hi = math.ceil((t + 1) / self.fps * self.rate)
            near = round((t + 0.5) / self.fps * self.rate)
            if not final:
                if max(hi, near + 1) > have:
                    break
            else:
                lo, hi, near = min(lo, T), min(hi, T), min(max(near, 0), T - 1)
            if hi > lo:
                row = np.mean(self._mels[lo - self._mel0: hi - self._mel0], axis=0)
            else:
                row = self._mels[near - self._mel0]
            rows.append(np.asarray(row, np.float32))
            self._t += 1
        # trim mel frames and audio no longer needed
        lo_next = max(0, min(math.ceil(self._t / self.fps * self.rate),
                             round((self._t + 0.5) / self.fps * self.rate)) - 1)
        if final:
            lo_next = min(lo_next, have - 1)
        drop = lo_next - self._mel0
        if drop > 0:
            del self._mels[:drop]
            self._mel0 += drop
        j0 = self._mel0 + len(self._mels)
        keep_from = max(0, ((j0 * self.hop - self.half) // self.hop - 2) * self.hop)
        if keep_from > self._buf0:
            self._buf = self._buf[keep_from - self._buf0:]
            self._buf0 = keep_from
        return rows

    def push(self, wav: np.ndarray) -> List[np.ndarray]:
        self._buf = np.concatenate([self._buf, wav])
        self._compute(final=False)
        return self._rows(final=False)

    def finish(self) -> List[np.ndarray]:
        if self._received == 0:
            return []
        self._compute(final=True)
        return self._rows(final=True)


# ----------------------------------------------------------------------------- resampling, blinks
class StreamResampler:
    """Any input rate -> `sr_out`, chunk by chunk: polyphase FIR (Kaiser-windowed sinc low-pass at
    the lower Nyquist), group delay compensated so output sample n is input time n / sr_out.
    Total output of a stream of S input samples: ceil(S * sr_out / sr_in)."""

    def __init__(self, sr_in: int, sr_out: int = SAMPLE_RATE, half_taps: int = 16):
        if isinstance(sr_in, bool) or not isinstance(sr_in, (int, np.integer)) or not 4000 <= sr_in <= 384000:
            raise DriveError(f"sample_rate must be an integer in [4000, 384000] Hz, got {sr_in!r}")
        g = math.gcd(int(sr_in), int(sr_out))
        self.up, self.down = int(sr_out) // g, int(sr_in) // g
        self.sr_in, self.sr_out = int(sr_in), int(sr_out)
        self.passthrough = self.up == self.down
        if not self.passthrough:
            from scipy.signal import firwin

            r = max(self.up, self.down)
            L = 2 * half_taps * r + 1  # odd: integer group delay (L-1)/2 in the upsampled domain
            h = firwin(L, 1.0 / r, window=("kaiser", 8.0)) * self.up
            J = int(math.ceil(L / self.up))
            hp = np.zeros(self.up * J)
            hp[:L] = h
            self.hp = hp.reshape(J, self.up).T.copy()  # [up, J]: hp[p, j] = h[p + j*up]
            self.J, self.D = J, (L - 1) // 2
        self.reset()

    def reset(self) -> None:
        self._x = np.zeros(0, np.float64)
        self._x0 = 0
        self._n = 0  # next output index
        self._S = 0

    def _run(self, n_end: int) -> np.ndarray:
        n = np.arange(self._n, n_end, dtype=np.int64)
        if not len(n):
            return np.zeros(0, np.float32)
        m = n * self.down + self.D
        idx = (m // self.up)[:, None] - np.arange(self.J)[None]  # [n, J] input sample indices
        rel = idx - self._x0
        valid = (idx >= 0) & (idx < self._S)
        vals = np.where(valid, self._x[np.clip(rel, 0, max(0, len(self._x) - 1))] if len(self._x) else 0.0, 0.0)
        y = np.sum(self.hp[m % self.up] * vals, axis=1)
        self._n = n_end
        keep = max(0, (self._n * self.down + self.D) // self.up - self.J + 1)
        if keep > self._x0:
            self._x = self._x[keep - self._x0:]
            self._x0 = keep
        return y.astype(np.float32)

    def push(self, x: np.ndarray) -> np.ndarray:
        x = check_chunk(x)
        if self.passthrough:
            self._S += len(x)
            return x
        self._x = np.concatenate([self._x, x.astype(np.float64)])
        self._S += len(x)
        # output n needs input up to (n*down + D) // up
        n_end = max(self._n, ((self._S - 1) * self.up - self.D) // self.down + 1) if self._S else 0
        return self._run(n_end)

    def flush(self) -> np.ndarray:
        if self.passthrough:
            return np.zeros(0, np.float32)
        total = int(math.ceil(self._S * self.up / self.down))
        return self._run(max(self._n, total))


class WholeAudioFeatures:
    """Conditioner for offline driving with features that cannot stream (hubert/wav2vec2): collects
    the audio and computes frame_features of all of it at the end."""

    def __init__(self, fps: float, cfg):
        self.fps, self.cfg = float(fps), cfg
        self.reset()

    def reset(self) -> None:
        self._chunks: List[np.ndarray] = []

    def push(self, wav: np.ndarray) -> List[np.ndarray]:
        self._chunks.append(wav)
        return []

    def finish(self) -> List[np.ndarray]:
        from avatar.audio.features import frame_features

        wav = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        if not len(wav):
            return []
        F = num_frames(len(wav), self.fps)
        return list(frame_features(wav, self.fps, F, self.cfg).numpy())
