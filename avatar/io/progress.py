"""Progress of long work, visible whether or not stderr is a terminal.

    p = Progress(total, "drive", unit="frame")   # a tqdm bar on a terminal; otherwise one plain line
    for ...: p.update(done)                       # every `every_s` seconds (never one per step)
    p.close()                                     # a final line with the total time

On a terminal the bar redraws in place; when stderr is a file or a pipe (a log, CI, `2>log`) the
progress is a line like `[drive] 1200/15000 frames (8%), 41.3 frames/s, 5 min 34 s left` every
`every_s` seconds (default 5; $AVATAR_PROGRESS_S overrides it). `bar=False` forces the plain lines on a terminal too (e.g.
`avatar train --no-progress`, with a longer interval).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Optional, TextIO


def _eta(s: float) -> str:
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60} min"
    if s >= 60:
        return f"{s // 60} min {s % 60} s"
    return f"{s} s"


class Progress:
    """See the module docstring."""

    def __init__(self, total: Optional[int], desc: str, *, unit: str = "step", initial: int = 0,
                 every_s: float = 5.0, bar: Optional[bool] = None, stream: Optional[TextIO] = None):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream or sys.stderr
        # AVATAR_PROGRESS_S=SECONDS sets the interval of the plain lines (tests, or a quieter log)
        self.every_s = float(os.environ.get("AVATAR_PROGRESS_S", every_s))
        self.n = self._n0 = int(initial)
        self._t0 = self._last = time.monotonic()
        isatty = getattr(self.stream, "isatty", lambda: False)
        self._bar = None
        if bar is None:
            bar = bool(isatty())
        if bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
                             file=self.stream)

    def set_postfix(self, **kw) -> None:
        if self._bar is not None:
            self._bar.set_postfix(**kw)
        else:
            self._postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def update(self, n: int) -> None:
        """Record that `n` units are done (absolute count)."""
        if self._bar is not None:
            self._bar.update(n - self.n)
            self.n = n
            return
        self.n = n
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._line(now)

    def _line(self, now: float, final: bool = False) -> None:
        dt = max(now - self._t0, 1e-9)
        rate = (self.n - self._n0) / dt
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" ({100.0 * self.n / self.total:.0f}%)" if self.total else ""
        if final:
            tail = f", done in {_eta(dt)}"
        elif self.total and rate > 0:
            tail = f", {_eta((self.total - self.n) / rate)} left"
        else:
            tail = ""
        post = getattr(self, "_postfix", "")
        print(f"[{self.desc}] {done} {self.unit}s{pct}, {rate:.1f} {self.unit}s/s{tail}"
              + (f", {post}" if post else ""), file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif time.monotonic() - self._t0 >= self.every_s:  # a run short enough for no line stays quiet
            self._line(time.monotonic(), final=True)
