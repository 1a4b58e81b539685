"""Streaming decode: ffmpeg -> rawvideo RGB frames at a constant rate and a reduced size.

ffmpeg autorotates (display matrix) before our filters, resamples to a constant frame rate with
the `fps` filter (output frame n is the input frame shown at t = n / fps, so variable frame rate
becomes constant) and scales in the decoder, so a 4K input never exists in memory at full size.
Only one frame is held at a time.
"""
from __future__ import annotations

from typing import Dict, Iterator, Optional, Tuple

import numpy as np

from avatar.media.video import rawvideo_frames

from .errors import CaptureError
from avatar.media.ffmpeg import ffmpeg_exe
from avatar.media.probe import MediaInfo


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
    stats: Dict = {}
    yield from rawvideo_frames(cmd, w, h, stats)
    if report is not None:
        report.update(stats)
    if stats["frames"] == 0:
        raise CaptureError(f"{info.path}: no frame could be decoded (rc={stats['returncode']}): "
                           f"{stats['stderr'].strip()[-300:]}")
