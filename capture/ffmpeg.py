"""The ffmpeg binary (avatar.media when present, else imageio-ffmpeg's)."""
from __future__ import annotations


def ffmpeg_exe() -> str:
    try:
        from avatar.media.ffmpeg import ffmpeg_exe as _exe
    except ImportError:
        _exe = None
    if _exe is not None:
        return _exe()
    try:
        import imageio_ffmpeg
    except ImportError:
        raise RuntimeError("ffmpeg not found: pip install imageio-ffmpeg") from None
    return imageio_ffmpeg.get_ffmpeg_exe()
