"""The ffmpeg binary (avatar.media's, from imageio-ffmpeg)."""
from __future__ import annotations


def ffmpeg_exe() -> str:
    from avatar.media.ffmpeg import MediaError, ffmpeg_exe as _exe

    from .errors import CaptureError

    try:
        return _exe()
    except MediaError as e:
        raise CaptureError(str(e)) from None
