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

import dataclasses
import os
import re
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


# ---- legacy probe: its last caller is avatar/commands/eval.py::_video_fps; once that reads
# avatar.media.probe.probe(path, count_frames=False).fps, delete Stream, Probe and probe below.
@dataclasses.dataclass
class Stream:
    """One stream of a media file as `ffmpeg -i` reports it."""
    index: int
    kind: str                    # "video" | "audio" | other
    codec: str
    width: int = 0
    height: int = 0
    fps: float = 0.0
    sample_rate: int = 0
    channels: str = ""


@dataclasses.dataclass
class Probe:
    """Container-level facts about a media file."""
    path: Path
    format: str
    duration: Optional[float]    # seconds (container), None when unknown
    streams: List[Stream]

    @property
    def video(self) -> Optional[Stream]:
        return next((s for s in self.streams if s.kind == "video"), None)

    @property
    def audio(self) -> Optional[Stream]:
        return next((s for s in self.streams if s.kind == "audio"), None)


_STREAM = re.compile(r"Stream #0:(\d+)[^:]*: (\w+): (\w+)(.*)")


def probe(path, error: Type[MediaError] = MediaError) -> Probe:
    """Parse `ffmpeg -i path` (format, duration, streams); `error` if ffmpeg cannot open it."""
    p = check_input(path, error)
    res = subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", str(p)],
                         capture_output=True, check=False)  # exits 1 ("no output file") by design
    text = res.stderr.decode("utf-8", "replace")
    m = re.search(r"Input #0, ([^ ]+), from", text)
    if not m:
        hint = " (truncated? the mp4 index 'moov' is missing)" if "moov atom not found" in text else ""
        raise error(f"{p}: not a readable media file{hint}: {_tail(res.stderr, 2)}")
    fmt = m.group(1).rstrip(",")
    dur = None
    md = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", text)
    if md:
        dur = int(md.group(1)) * 3600 + int(md.group(2)) * 60 + float(md.group(3))
    streams = []
    for line in text.splitlines():
        ms = _STREAM.search(line)
        if not ms:
            continue
        s = Stream(index=int(ms.group(1)), kind=ms.group(2).lower(), codec=ms.group(3))
        rest = ms.group(4)
        if s.kind == "video":
            mz = re.search(r"[ ,](\d{2,5})x(\d{2,5})[ ,\n]", rest + " ")
            if mz:
                s.width, s.height = int(mz.group(1)), int(mz.group(2))
            mf = re.search(r"([\d.]+)(k?) fps", rest)
            if mf:
                s.fps = float(mf.group(1)) * (1000 if mf.group(2) else 1)
        elif s.kind == "audio":
            mr = re.search(r"(\d+) Hz, ([^,]+)", rest)
            if mr:
                s.sample_rate, s.channels = int(mr.group(1)), mr.group(2).strip()
        streams.append(s)
    return Probe(path=p, format=fmt, duration=dur, streams=streams)
