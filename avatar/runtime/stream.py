"""The driving runtime: streamed audio in, rendered frames out, in order, as soon as they can be made.

Everything that plays an avatar from audio (`avatar drive`, `avatar serve`, `avatar bench drive`)
goes through one interface, `FrameSource`:

    src.reset()                        # start a new stream
    frames = src.push_audio(chunk)     # chunk: np.float32 [S] mono at 16 kHz, any length (even 0)
    frames += src.flush()              # end of stream: the remaining frames (look-ahead padded)

Each `Frame` has its index t, its timestamp t / fps on the audio timeline, and uint8 views
[C, H, W, 3] (C = 1 mono, 2 stereo: left, right) plus alpha. Frame t covers the audio
[t/fps, (t+1)/fps) s; a stream of S samples yields exactly `num_frames(S, fps)` = ceil(S fps / SAMPLE_RATE)
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

from dataclasses import dataclass
from typing import Any, Callable, List, Literal, Optional, Protocol, Tuple

import numpy as np

from avatar.audio.timeline import DriveError, check_chunk
from avatar.runtime.view import side_by_side


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


