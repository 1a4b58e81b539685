"""Streaming decode: ffmpeg -> rawvideo RGB frames at a constant rate and a reduced size.

ffmpeg autorotates (display matrix) before our filters, resamples to a constant frame rate with
the `fps` filter (output frame n is the input frame shown at t = n / fps, so variable frame rate
becomes constant) and scales in the decoder, so a 4K input never exists in memory at full size.
Only one frame is held at a time.
"""
from __future__ import annotations

import subprocess
from typing import Dict, Iterator, Optional, Tuple

import numpy as np

from .errors import CaptureError
from .ffmpeg import ffmpeg_exe
from .probe import MediaInfo


def work_size(display_size: Tuple[int, int], max_size: int) -> Tuple[int, int]:
    """(w, h) scaled so the longer side is <= max_size (never upscaled), even numbers."""
    w, h = display_size
    s = min(1.0, max_size / max(w, h))
    return max(2, int(round(w * s / 2)) * 2), max(2, int(round(h * s / 2)) * 2)


def iter_frames(info: MediaInfo, fps: float, size: Tuple[int, int], threads: int = 2,
                report: Optional[Dict] = None) -> Iterator[np.ndarray]:
    """Yield uint8 [h, w, 3] RGB frames of `info.path` at a constant `fps`, scaled to size=(w, h).
    When given, `report` receives "frames", "returncode" and "stderr" (decoder errors) at the end."""
    w, h = size
    vf = f"fps={fps:.6f}"
    if tuple(size) != tuple(info.display_size):
        vf += f",scale={w}:{h}:flags=area"
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-threads", str(threads), "-i", info.path,
           "-map", "0:v:0", "-vf", vf, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    nbytes = w * h * 3
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=nbytes)
    n = 0
    try:
        while True:
            buf = proc.stdout.read(nbytes)
            if len(buf) < nbytes:
                break
            n += 1
            yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        rc = proc.wait()
    if report is not None:
        report.update(frames=n, returncode=rc, stderr=err)
    if n == 0:
        raise CaptureError(f"{info.path}: no frame could be decoded (rc={rc}): {err.strip()[-300:]}")
