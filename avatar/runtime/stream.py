"""The driving runtime: streamed audio in, rendered frames out, in order, as soon as they can be made.

Everything that plays an avatar from audio (`avatar drive`, `avatar serve`, `avatar bench drive`)
goes through one interface, `FrameSource`:

    src.reset()                        # start a new stream
    frames = src.push_audio(chunk)     # chunk: np.float32 [S] mono at 16 kHz, any length (even 0)
    frames += src.flush()              # end of stream: the remaining frames (look-ahead padded)

Each `Frame` has its index t, its timestamp t / fps on the audio timeline, and uint8 views
[C, H, W, 3] (C = 1 mono, 2 stereo: left, right) plus alpha. Frame t covers the audio
[t/fps, (t+1)/fps) s; a stream of S samples yields exactly `num_frames(S, fps)` = ceil(S fps / 16000)
frames. Frame t is emitted by the push that delivers the audio it needs: its own interval plus
the model's look-ahead (`lookahead` frames, bounded: that is the algorithmic latency).

Building blocks (no torch at import time):
* `StreamingSource`: the scheduling above, generic over a per-frame *conditioner* (audio -> one
  value per frame) and a *renderer* (frame indices + conditioning windows -> frames).
* `MouthEnvelope`: conditioner giving a mouth opening in [0, 1] from the audio level (procedural head).
* `StreamingMelFeatures`: conditioner giving per-frame log-mel features equal to
  `avatar.audio.features.frame_features` of the whole audio (the AvatarModel source).
* `StreamResampler`: any input rate -> 16 kHz, chunk by chunk (anti-aliased polyphase FIR).
* `BlinkSchedule`: natural-looking blinks (deterministic from a seed).
* `Backdrop`: colour / plate / transparent compositing of premultiplied renders.
* Sources: `ProceduralHeadSource` (procedural Gaussian head, mouth follows the audio envelope;
  fast, needs no training) and `AvatarSource` (a trained AvatarModel checkpoint).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, List, Literal, Optional, Protocol, Tuple

import numpy as np

from avatar.runtime.camera_path import Camera, FixedPose, PoseSource, frontal_camera
from avatar.runtime.view import side_by_side, stereo_viewmats

SAMPLE_RATE = 16000


class DriveError(ValueError):
    """Bad input to the driving runtime (names the argument and what was expected)."""


def num_frames(num_samples: int, fps: float, sr: int = SAMPLE_RATE) -> int:
    """Video frames covering `num_samples` of audio at `sr` (rounded up; 0 samples -> 0 frames).
    Same rule as avatar.audio.features.num_frames_for for any non-empty audio."""
    if num_samples <= 0:
        return 0
    return max(1, int(math.ceil(num_samples / sr * fps - 1e-6)))


def frame_sample(t: int, fps: float, sr: int = SAMPLE_RATE) -> int:
    """First audio sample of video frame t (frame t covers [t/fps, (t+1)/fps) s)."""
    return int(round(t * sr / fps))


# ----------------------------------------------------------------------------- frames and sources
@dataclass
class Frame:
    """One output frame of a stream."""

    index: int
    """Frame index t on the stream's video timeline."""
    timestamp_s: float
    """t / fps: where the frame starts on the audio timeline."""
    rgb: np.ndarray  # [C, H, W, 3] uint8 (C = 1 mono, 2 stereo: left, right)
    alpha: np.ndarray  # [C, H, W] uint8 coverage (255 = opaque avatar)

    @property
    def image(self) -> np.ndarray:
        """[H, C*W, 3] uint8: the mono view, or the stereo pair side by side (left eye left)."""
        return self.rgb[0] if len(self.rgb) == 1 else side_by_side(self.rgb)

    @property
    def rgba(self) -> np.ndarray:
        """[H, C*W, 4] uint8 with straight (not premultiplied) colour and alpha."""
        return np.concatenate([self.image, (self.alpha[0] if len(self.alpha) == 1 else
                                            side_by_side(self.alpha))[..., None]], axis=-1)


class FrameSource(Protocol):
    """Streams audio into frames (see the module docstring)."""

    fps: float
    width: int
    height: int
    views: int  # 1 mono, 2 stereo
    lookahead: int  # frames of future audio needed before a frame can be emitted

    def reset(self) -> None: ...

    def push_audio(self, chunk: np.ndarray) -> List[Frame]: ...

    def flush(self) -> List[Frame]: ...


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


class Conditioner(Protocol):
    """Audio (16 kHz, streamed) -> one conditioning row per video frame, in order."""

    def reset(self) -> None: ...

    def push(self, wav: np.ndarray) -> List[np.ndarray]: ...  # new rows, in frame order

    def finish(self) -> List[np.ndarray]: ...  # the remaining rows up to num_frames(total)


# renderer(frame indices [B], windows [B, 2k+1, ...] of conditioning rows) -> (colors, alphas):
# colors [B, C, H, W, 3] float premultiplied in [0, 1], alphas [B, C, H, W, 1] (numpy or torch).
Renderer = Callable[[List[int], np.ndarray], Tuple[Any, Any]]


@dataclass
class Backdrop:
    """What is behind the avatar."""

    kind: Literal["color", "plate", "transparent"] = "color"
    color: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    plate: Optional[np.ndarray] = None  # [H, W, 3] float32 in [0, 1] at the render size

    def compose(self, colors: np.ndarray, alphas: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """colors [..., H, W, 3] premultiplied, alphas [..., H, W, 1] -> rgb uint8, alpha uint8 [..., H, W].
        For "transparent" the rgb is straight colour (divided by alpha), for PNG with alpha."""
        a = np.clip(alphas, 0.0, 1.0)
        if self.kind == "transparent":
            rgb = np.where(a > 1e-4, colors / np.maximum(a, 1e-4), 0.0)
        elif self.kind == "plate":
            if self.plate is None:
                raise DriveError("Backdrop kind 'plate' needs a plate image")
            if self.plate.shape[:2] != colors.shape[-3:-1]:
                raise DriveError(f"background plate is {self.plate.shape[1]}x{self.plate.shape[0]}, "
                                    f"the render is {colors.shape[-2]}x{colors.shape[-3]}")
            rgb = colors + (1.0 - a) * self.plate
        else:
            rgb = colors + (1.0 - a) * np.asarray(self.color, np.float32)
        to8 = lambda x: (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)  # noqa: E731
        return to8(rgb), to8(a[..., 0])


class StreamingSource:
    """Generic FrameSource: a conditioner gives one row per frame; frame t is rendered once rows
    up to t + lookahead exist (or the stream ended) from the window rows t-k .. t+k (edge-padded:
    clamped to the first row / the last row of the stream; rows beyond t + lookahead are never
    read in causal mode, so they are filled with the latest row)."""

    def __init__(self, conditioner: Conditioner, renderer: Renderer, *, fps: float, width: int,
                 height: int, views: int, window: int = 0, lookahead: int = 0,
                 backdrop: Optional[Backdrop] = None, batch: int = 1):
        if fps <= 0:
            raise DriveError(f"fps must be > 0, got {fps}")
        if window < 0 or lookahead < 0:
            raise DriveError(f"window ({window}) and lookahead ({lookahead}) must be >= 0")
        self.conditioner, self.renderer = conditioner, renderer
        self.fps, self.width, self.height, self.views = float(fps), int(width), int(height), int(views)
        self.window, self.lookahead = int(window), int(lookahead)
        self.backdrop = backdrop or Backdrop()
        self.batch = max(1, int(batch))
        self.reset()

    def reset(self) -> None:
        self.conditioner.reset()
        self._rows: List[np.ndarray] = []  # rows [self._row0, self._row0 + len)
        self._row0 = 0
        self._next = 0  # next frame index to emit
        self._ended = False
        self.skipped: List[int] = []  # frames dropped by push_audio(keep_last=...)

    @property
    def frames_emitted(self) -> int:
        return self._next

    def push_audio(self, chunk: np.ndarray, keep_last: Optional[int] = None) -> List[Frame]:
        """Frames made ready by this chunk. keep_last=K (live use when rendering lags): render only
        the newest K ready frames; the older ones are skipped and their indices appended to
        `self.skipped` (the stream's timeline is unchanged)."""
        if self._ended:
            raise DriveError("push_audio after flush: call reset() to start a new stream")
        self._rows.extend(self.conditioner.push(check_chunk(chunk)))
        ready = self._row0 + len(self._rows) - self.lookahead  # frames < ready have their rows
        if keep_last is not None and ready - self._next > max(1, keep_last):
            new_next = ready - max(1, keep_last)
            self.skipped.extend(range(self._next, new_next))
            self._next = new_next
        return self._emit(ready)

    def flush(self) -> List[Frame]:
        if self._ended:
            return []
        self._rows.extend(self.conditioner.finish())
        self._ended = True
        total = self._row0 + len(self._rows)
        return self._emit(total)

    def _window(self, t: int) -> np.ndarray:
        last = self._row0 + len(self._rows) - 1
        idx = [min(max(j, 0), last) for j in range(t - self.window, t + self.window + 1)]
        return np.stack([self._rows[j - self._row0] for j in idx])

    def _emit(self, ready: int) -> List[Frame]:
        out: List[Frame] = []
        while self._next < ready:
            idx = list(range(self._next, min(ready, self._next + self.batch)))
            wins = np.stack([self._window(t) for t in idx])  # [B, 2k+1, ...]
            colors, alphas = self.renderer(idx, wins)
            colors = _np(colors)  # [B, C, H, W, 3]
            alphas = _np(alphas)  # [B, C, H, W, 1]
            rgb, a = self.backdrop.compose(colors, alphas)
            for b, t in enumerate(idx):
                out.append(Frame(t, t / self.fps, rgb[b], a[b]))
            self._next = idx[-1] + 1
        # rows before next - window are never read again
        drop = min(len(self._rows) - 1, self._next - self.window - self._row0)
        if drop > 0:
            del self._rows[:drop]
            self._row0 += drop
        return out


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, np.float32)


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


@dataclass
class BlinkConfig:
    """Procedural blinks while driving (AvatarModel's blink input, procedural head's eyelids)."""

    enabled: bool = True
    """Blink at all (False: eyes stay open)."""
    interval_s: Tuple[float, float] = (2.5, 5.5)
    """Uniform range of the time between blinks in seconds."""
    duration_s: float = 0.2
    """Close-and-open duration of one blink in seconds."""
    seed: int = 0
    """Random seed of the blink times (the same audio drives the same blinks)."""


class BlinkSchedule:
    """blink(t) in [0, 1] (1 = closed) for video frame t: triangular close/open at random times."""

    def __init__(self, fps: float, cfg: Optional[BlinkConfig] = None):
        self.fps, self.cfg = float(fps), cfg or BlinkConfig()
        self._rng = np.random.default_rng(self.cfg.seed)
        self._times: List[float] = [1.0 + float(self._rng.uniform(0, 1.5))]

    def __call__(self, t: int) -> float:
        import bisect

        if not self.cfg.enabled:
            return 0.0
        s = t / self.fps
        while self._times[-1] < s + self.cfg.duration_s:
            self._times.append(self._times[-1] + float(self._rng.uniform(*self.cfg.interval_s)))
        half = self.cfg.duration_s / 2
        k = bisect.bisect_left(self._times, s - self.cfg.duration_s)
        v = 0.0
        for c in self._times[k:k + 3]:
            v = max(v, 1.0 - abs(s - (c + half)) / half)
        return float(min(1.0, max(0.0, v)))


# ----------------------------------------------------------------------------- shared options
@dataclass
class ViewConfig:
    """Output view: size, pose, stereo."""

    width: int = 256
    """Output width per eye in pixels (even: H.264)."""
    height: int = 256
    """Output height in pixels (even: H.264)."""
    stereo: bool = False
    """Render a stereo pair (left, right) side by side, both eyes in one rasterize call."""
    ipd: float = 0.063
    """Stereo inter-pupillary distance in metres."""
    backend: str = "auto"
    """Rasterizer backend (auto, cuda, gsplat, cpu, torch)."""


def cameras_for(pose: PoseSource, t: int, view: ViewConfig) -> Tuple[np.ndarray, np.ndarray]:
    """Viewmats [C, 4, 4], Ks [C, 3, 3] (float32) for frame t: the pose source's camera resized
    to the output size, duplicated into a converged stereo pair when view.stereo."""
    cam = pose.camera(t)
    if (cam.width, cam.height) != (view.width, view.height):
        cam = cam.resized(view.width, view.height)
    if view.stereo:
        return stereo_viewmats(cam.viewmat, view.ipd), np.stack([cam.K, cam.K])
    return cam.viewmat[None].astype(np.float32), cam.K[None].astype(np.float32)


# ----------------------------------------------------------------------------- procedural head
def procedural_camera(width: int, height: int) -> Camera:
    """Default frontal camera for the procedural head."""
    return frontal_camera(width, height, distance=0.6, fov_y_deg=30.0)


class ProceduralHeadSource(StreamingSource):
    """FrameSource over avatar.synth.head: mouth opening follows the audio envelope,
    blinks from a BlinkSchedule. Needs no checkpoint; fast enough for server and page tests.

    With a fixed pose, renders are cached per quantised expression (`mouth_levels` x
    `blink_levels` entries at most), so a stream costs at most that many rasterize calls."""

    def __init__(self, view: Optional[ViewConfig] = None, fps: float = 25.0,
                 pose: Optional[PoseSource] = None, backdrop: Optional[Backdrop] = None,
                 envelope: Optional[EnvelopeConfig] = None, blink: Optional[BlinkConfig] = None,
                 spacing: float = 0.006, mouth_levels: int = 8, blink_levels: int = 4):
        from avatar.synth.head import HeadStyle

        self.view = view or ViewConfig()
        self.style = HeadStyle(spacing=spacing)
        self.pose = pose or FixedPose(procedural_camera(self.view.width, self.view.height))
        self.blinks = BlinkSchedule(fps, blink)
        self.levels = (max(1, int(mouth_levels)), max(1, int(blink_levels)))
        self._cache: dict = {}
        super().__init__(MouthEnvelope(fps, envelope), self._render, fps=fps,
                         width=self.view.width, height=self.view.height,
                         views=2 if self.view.stereo else 1, window=0, lookahead=0,
                         backdrop=backdrop or Backdrop("color", (1.0, 1.0, 1.0)))

    def expression(self, t: int, mouth_open: float) -> Tuple[float, float]:
        """(mouth_open, blink) actually rendered for frame t (quantised when caching)."""
        m = min(1.0, max(0.0, float(mouth_open)))
        b = self.blinks(t)
        if isinstance(self.pose, FixedPose):
            lm, lb = self.levels
            m = round(m * lm) / lm
            b = round(b * lb) / lb
        return m, b

    def gaussians(self, mouth_open: float, blink: float) -> dict:
        """The head's Gaussians for one expression (torch tensors, see avatar.synth.head)."""
        from avatar.synth.head import procedural_head

        return procedural_head(min(1.0, max(0.0, mouth_open)), min(1.0, max(0.0, blink)), self.style)

    def _render_one(self, t: int, m: float, b: float):
        from avatar.ops import rasterize
        import torch

        g = self.gaussians(m, b)
        V, K = cameras_for(self.pose, t, self.view)
        c, a, _ = rasterize(g["means"], g["quats"], g["scales"], g["opacities"], g["colors"],
                            torch.from_numpy(V), torch.from_numpy(K), self.view.width,
                            self.view.height, backend=self.view.backend)
        return c.numpy(), a.numpy()  # [C, H, W, 3], [C, H, W, 1]

    def _render(self, idx: List[int], wins: np.ndarray):
        import torch

        cols, alps = [], []
        with torch.no_grad():
            for t, w in zip(idx, wins):
                m, b = self.expression(t, float(w[0, 0]))
                if isinstance(self.pose, FixedPose):
                    if (m, b) not in self._cache:
                        self._cache[(m, b)] = self._render_one(t, m, b)
                    c, a = self._cache[(m, b)]
                else:
                    c, a = self._render_one(t, m, b)
                cols.append(c)
                alps.append(a)
        return np.stack(cols), np.stack(alps)


# ----------------------------------------------------------------------------- trained avatar
@dataclass
class LoadedAvatar:
    """An AvatarModel with what the checkpoint says about how it was captured."""

    model: Any  # avatar.model.avatar.AvatarModel (eval mode)
    meta: dict
    path: str

    @property
    def fps(self) -> float:
        """Training video frame rate (checkpoint meta "fps"; 25 when absent)."""
        return float(self.meta.get("fps", 25.0))

    def camera(self) -> Camera:
        """Default camera: the checkpoint's reference camera (meta "viewmat", "K", "width", "height"),
        else a frontal camera 0.6 m from the head."""
        m = self.meta
        if "viewmat" in m and "K" in m:
            w, h = int(m.get("width", 256)), int(m.get("height", 256))
            return Camera(np.asarray(m["viewmat"], np.float32).reshape(4, 4),
                          np.asarray(m["K"], np.float32).reshape(3, 3), w, h)
        return frontal_camera(int(m.get("width", 256)), int(m.get("height", 256)), distance=0.6)


def apply_capture_defaults(avatar: LoadedAvatar, data_dir) -> LoadedAvatar:
    """Fill what the checkpoint's meta lacks (fps, reference camera) from its capture folder
    (avatar.data, the one reader): fps = the capture's, camera = its first frame's."""
    from avatar.data import load_capture

    ds = load_capture(data_dir)
    m = avatar.meta
    m.setdefault("fps", float(ds.fps))
    if "viewmat" not in m or "K" not in m:
        m.update(viewmat=np.asarray(ds.viewmats[0], np.float32).tolist(),
                 K=np.asarray(ds.Ks[0], np.float32).tolist(), width=int(ds.width), height=int(ds.height))
    return avatar


def load_avatar(path, device: str = "cpu") -> LoadedAvatar:
    """Load an avatar checkpoint (torch.load weights_only=True) keeping its meta dict."""
    from avatar.model.avatar import AvatarModel

    d = AvatarModel.read_checkpoint(path, device)
    model = AvatarModel.from_checkpoint_dict(d, str(path)).to(device).eval()
    meta = d.get("meta") or {}
    return LoadedAvatar(model, dict(meta) if isinstance(meta, dict) else {}, str(path))


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


def audio_feature_config(model) -> Any:
    """The AudioFeatureConfig the model was trained with (checkpoint audio_config)."""
    from avatar.audio.features import AudioFeatureConfig
    from avatar.model.config import from_dict

    return from_dict(AudioFeatureConfig, dict(model.audio_config or {}), "audio_config.")


class AvatarSource(StreamingSource):
    """FrameSource over a trained AvatarModel: per-frame log-mel features (streamed, identical to the
    offline features), audio windows of ±k frames, the model's audio encoder (causal look-ahead when
    the model was trained causal; otherwise the full k frames of look-ahead), deformation, render.
    Blinks come from a BlinkSchedule (or `blink_fn(t)`), head pose from a PoseSource; motion codes
    are None (the model's neutral) unless `motion_fn(t) -> [M]` is given (e.g. from the motion
    prior, see `prior_tracks`)."""

    def __init__(self, avatar: "LoadedAvatar", view: Optional[ViewConfig] = None, *,
                 fps: Optional[float] = None, pose: Optional[PoseSource] = None,
                 backdrop: Optional[Backdrop] = None, blink: Optional[BlinkConfig] = None,
                 streaming: bool = True, batch: int = 1,
                 motion_fn: Optional[Callable[[int], np.ndarray]] = None,
                 blink_fn: Optional[Callable[[int], float]] = None):
        self.avatar = avatar
        self.model = avatar.model
        self.view = view or ViewConfig()
        fps = float(fps or avatar.fps)
        cfg = audio_feature_config(self.model)
        if cfg.kind == "mel":
            cond: Conditioner = StreamingMelFeatures(fps, cfg)
        elif not streaming:
            cond = WholeAudioFeatures(fps, cfg)
        else:
            raise DriveError(f"{avatar.path}: audio features kind={cfg.kind!r} cannot be streamed "
                             "(only 'mel' can); use `avatar drive` for offline rendering")
        a = self.model.cfg.audio
        k = int(a.window)
        lookahead = min(k, max(0, int(a.lookahead))) if a.causal else k
        self.pose = pose or FixedPose(avatar.camera())
        self.blinks = blink_fn or BlinkSchedule(fps, blink)
        self.motion_fn = motion_fn
        super().__init__(cond, self._render, fps=fps, width=self.view.width, height=self.view.height,
                         views=2 if self.view.stereo else 1, window=k, lookahead=lookahead,
                         backdrop=backdrop or Backdrop("color", (1.0, 1.0, 1.0)), batch=batch)

    def _render(self, idx: List[int], wins: np.ndarray):
        import torch

        dev = self.model.gaussians.means.device
        with torch.no_grad():
            z = self.model.encode_audio(torch.from_numpy(np.ascontiguousarray(wins, np.float32)).to(dev))  # [B, A]
            cols, alps = [], []
            for b, t in enumerate(idx):
                V, K = cameras_for(self.pose, t, self.view)
                motion = None if self.motion_fn is None else torch.as_tensor(self.motion_fn(t))
                c, a = self.model.render_frame(torch.from_numpy(V), torch.from_numpy(K), self.view.width,
                                               self.view.height, motion=motion, blink=self.blinks(t),
                                               background=None, audio_latent=z[b], backend=self.view.backend)
                cols.append(c)
                alps.append(a)
        return torch.stack(cols), torch.stack(alps)


def prior_tracks(prior_path, wav: np.ndarray, fps: float, avatar: Optional["LoadedAvatar"] = None, style=None):
    """Motion codes [F, M] and blinks [F] predicted from the audio by a generic motion prior
    (avatar.prior.model, offline: the whole audio at once). Checks that the prior's motion
    space matches the avatar's when the avatar has one. style: (ref_audio_feats [R, D], ref_motion
    [R, M]) of the person (avatar.prior.api.style_from_capture) or None (the prior's stored one)."""
    import torch

    from avatar.audio.features import AudioFeatureConfig, frame_features
    from avatar.model.config import from_dict
    from avatar.prior.model import MotionPrior, frame_pitch

    prior = MotionPrior.load(prior_path)
    if avatar is not None and avatar.model.motion_space:
        prior.check_motion_space(avatar.model.motion_space, source=avatar.path)
    F = num_frames(len(wav), fps)
    cfg = from_dict(AudioFeatureConfig, dict(prior.audio_features), "prior audio_features.")
    feats = frame_features(wav, fps, F, cfg)
    pitch = frame_pitch(wav, fps, F)
    with torch.no_grad():
        out = prior.predict(feats, pitch, style)
    return out["motion"].cpu().numpy().astype(np.float32), out["blink"].cpu().numpy().astype(np.float32)
