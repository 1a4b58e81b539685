"""Natural-looking blinks for driven avatars: `BlinkSchedule(fps, BlinkConfig)` -> blink(t) in [0, 1],
deterministic from a seed."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np


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
