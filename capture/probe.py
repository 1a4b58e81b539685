"""The capture's probe: avatar.media.probe (the one MediaInfo) with CaptureError and the capture's checks."""
from __future__ import annotations

from pathlib import Path

from avatar.media.ffmpeg import MediaError
from avatar.media.probe import MediaInfo, probe as media_probe

from .errors import CaptureError

__all__ = ["MediaInfo", "probe", "require_video"]


def probe(path) -> MediaInfo:
    """avatar.media.probe.probe raising CaptureError (a missing ffmpeg included)."""
    if Path(path).is_dir():
        raise CaptureError(f"{path}: is a folder, expected a video file (use --rig for frame folders)")
    try:
        return media_probe(path, CaptureError)
    except MediaError as e:
        raise CaptureError(str(e)) from None


def require_video(info: MediaInfo) -> None:
    """Refuse files without a decodable video stream."""
    if not info.has_video:
        what = f"an audio-only file ({info.audio_codec})" if info.has_audio else "a file without a video stream"
        raise CaptureError(f"{info.path}: is {what}; expected a video of a face")
    if info.width <= 0 or info.height <= 0:
        raise CaptureError(f"{info.path}: video stream has no size (corrupt?)")
    if info.num_frames == 0:
        raise CaptureError(f"{info.path}: video stream has no frames (corrupt or truncated file)")
    if info.container.endswith("_pipe") or info.container in ("image2", "png") or (
            info.num_frames <= 1 and info.duration <= 0.05):
        raise CaptureError(f"{info.path}: is a still image ({info.video_codec} in {info.container}), not a "
                           f"video; expected a video of a face talking (at least a few seconds)")
