"""The ffmpeg binary (from the imageio-ffmpeg package), run with list arguments, and a light stream probe.

ffmpeg_exe() -> str                       path of the binary; MediaError naming the fix when missing
run_ffmpeg(args, *, path, error, input=None) -> bytes
                                          runs `ffmpeg -nostdin -hide_banner -v error ARGS`, returns
                                          stdout, raises `error` (naming `path`) with ffmpeg's message
probe(path) -> Probe                      LEGACY, kept only for avatar/commands/eval.py (_video_fps):
                                          the media probe is avatar.media.probe (one MediaInfo)

Errors are MediaError (a ValueError); avatar.media.audio.AudioError and
avatar.media.video.VideoError subclass it.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import List, Optional, Sequence, Type


class MediaError(ValueError):
    """A media file could not be read or written (the message names the file)."""


_EXE: List[str] = []


def ffmpeg_exe() -> str:
    """Path of imageio-ffmpeg's ffmpeg binary (or $IMAGEIO_FFMPEG_EXE)."""
    if _EXE:
        return _EXE[0]
    try:
        import imageio_ffmpeg
    except ImportError as e:
        raise MediaError("ffmpeg not available: the imageio-ffmpeg package is not installed "
                         "(`.venv/bin/pip install -c constraints.txt imageio-ffmpeg`)") from e
    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as e:
        raise MediaError(f"ffmpeg not available: {e}") from e
    if not os.access(exe, os.X_OK):
        raise MediaError(f"ffmpeg binary {exe} is not executable")
    _EXE.append(exe)
    return exe


def _tail(stderr: bytes, n: int = 4) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) or "(no message)"


def check_input(path, error: Type[MediaError]) -> Path:
    """Raise `error` if `path` is missing, not a file or empty; returns Path(path)."""
    p = Path(path)
    if not p.exists():
        raise error(f"{p}: file not found")
    if not p.is_file():
        raise error(f"{p}: not a regular file")
    if p.stat().st_size == 0:
        raise error(f"{p}: file is empty (0 bytes)")
    return p


def run_ffmpeg(args: Sequence[str], *, path, error: Type[MediaError] = MediaError,
               input: Optional[bytes] = None) -> bytes:
    """Run ffmpeg with `args` (a list; never a shell string); stdout bytes, or `error` naming `path`."""
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", *map(str, args)]
    if input is not None:
        cmd.remove("-nostdin")
    try:
        res = subprocess.run(cmd, input=input, capture_output=True, check=True)
    except subprocess.CalledProcessError as e:
        raise error(f"{path}: ffmpeg failed: {_tail(e.stderr)}") from None
    return res.stdout
