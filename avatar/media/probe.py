"""The one media probe: what a media file holds, from `ffmpeg -i` (imageio-ffmpeg ships no ffprobe).

probe(path, error=MediaError, count_frames=True) -> MediaInfo
    container, codecs, size, rotation (display matrix side data or the legacy rotate tag), frame rate,
    duration, audio presence; a stream-copy pass counts the frames (no decode) to detect variable
    frame rate. Raises `error` naming the file when it is missing, a folder, empty or unreadable.
parse_ffmpeg_info(text, path, error=MediaError) -> MediaInfo     the parser alone (first input only)

capture.probe adds the capture's own checks (require_video) and CaptureError.
"""
from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path
from typing import Optional, Type

from avatar.media.ffmpeg import MediaError, ffmpeg_exe


@dataclasses.dataclass
class MediaInfo:
    """Probe result of one input file (sizes in pixels, times in seconds)."""

    path: str
    container: str
    duration: float
    video_codec: Optional[str] = None
    width: int = 0              # coded size
    height: int = 0
    rotation: int = 0           # display rotation, degrees counter-clockwise (0, 90, 180, 270)
    fps: float = 0.0            # nominal (average) frame rate reported by the container
    tbr: float = 0.0
    num_frames: int = 0         # packets in the video stream (stream copy)
    audio_codec: Optional[str] = None
    audio_sr: int = 0
    audio_channels: int = 0

    @property
    def has_video(self) -> bool:
        return self.video_codec is not None

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None

    @property
    def display_size(self) -> tuple:
        """(width, height) after applying the rotation (what ffmpeg's autorotate outputs)."""
        return (self.height, self.width) if self.rotation in (90, 270) else (self.width, self.height)

    @property
    def measured_fps(self) -> float:
        return self.num_frames / self.duration if self.duration > 0 and self.num_frames else self.fps

    @property
    def variable_fps(self) -> bool:
        """Heuristic: the mean rate differs from the stream's base rate by more than 2%."""
        ref = self.tbr or self.fps
        return bool(ref and self.num_frames > 1 and abs(self.measured_fps - ref) / ref > 0.02)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(display_size=list(self.display_size), variable_fps=self.variable_fps, has_audio=self.has_audio,
                 measured_fps=round(self.measured_fps, 4))
        return d


def _rate(s: str) -> float:
    s = s.strip()
    if s.endswith("k"):
        return float(s[:-1]) * 1000
    return float(s)


_CHANNELS = {"mono": 1, "stereo": 2, "2.1": 3, "quad": 4, "5.0": 5, "5.1": 6, "6.1": 7, "7.1": 8}


def parse_ffmpeg_info(text: str, path: str, error: Type[Exception] = MediaError) -> MediaInfo:
    """Parse `ffmpeg -i FILE` stderr (first input only); `error` when ffmpeg could not open the file."""
    m = re.search(r"Input #0, ([^ ]+), from", text)
    if not m:
        reason = text.strip().splitlines()[-1] if text.strip() else "no output"
        if "moov atom not found" in text:
            reason = "truncated? the mp4 index 'moov' is missing: " + reason
        raise error(f"{path}: not a readable media file ({reason})")
    container = m.group(1).rstrip(",")
    info = MediaInfo(path=path, container=container, duration=0.0)
    m = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", text)
    if m:
        info.duration = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    lines = text.splitlines()
    in_video = False
    for i, line in enumerate(lines):
        sm = re.match(r"\s*Stream #0:\d+.*?: (Video|Audio|Subtitle|Data|Attachment): (.*)", line)
        if sm:
            kind, rest = sm.groups()
            in_video = False
            if kind == "Video" and info.video_codec is None and "attached pic" not in rest:
                in_video = True
                info.video_codec = rest.split(",")[0].split()[0]
                sz = re.search(r", (\d{2,5})x(\d{2,5})", rest)
                if sz:
                    info.width, info.height = int(sz.group(1)), int(sz.group(2))
                fm = re.search(r"([\d.]+k?) fps", rest)
                if fm:
                    info.fps = _rate(fm.group(1))
                tm = re.search(r"([\d.]+k?) tbr", rest)
                if tm:
                    info.tbr = _rate(tm.group(1))
            elif kind == "Audio" and info.audio_codec is None:
                info.audio_codec = rest.split(",")[0].split()[0]
                am = re.search(r"(\d+) Hz", rest)
                if am:
                    info.audio_sr = int(am.group(1))
                parts = [p.strip() for p in rest.split(",")]
                for p in parts:
                    if p in _CHANNELS:
                        info.audio_channels = _CHANNELS[p]
                    cm = re.match(r"(\d+) channels", p)
                    if cm:
                        info.audio_channels = int(cm.group(1))
            continue
        if in_video:
            rm = re.search(r"rotation of (-?[\d.]+) degrees", line, re.I) or re.match(r"\s*rotate\s*:\s*(-?\d+)", line)
            if rm:
                info.rotation = int(round(float(rm.group(1)))) % 360
    return info


def _count_frames(path: str) -> int:
    """Video packets via a stream copy to the null muxer (fast: no decoding)."""
    r = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", path, "-map", "0:v:0", "-c", "copy",
                        "-f", "null", "-"], capture_output=True, text=True, errors="replace")
    frames = re.findall(r"frame=\s*(\d+)", r.stderr)
    return int(frames[-1]) if frames else 0


def probe(path, error: Type[Exception] = MediaError, count_frames: bool = True) -> MediaInfo:
    """Probe a media file; raises `error` for a missing/empty/corrupt file. `count_frames=False` skips
    the stream-copy pass (num_frames stays 0)."""
    p = Path(path)
    if not p.exists():
        raise error(f"{p}: file not found")
    if p.is_dir():
        raise error(f"{p}: is a folder, expected a media file")
    if p.stat().st_size == 0:
        raise error(f"{p}: file is empty (0 bytes)")
    r = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(p)], capture_output=True, text=True,
                       errors="replace")
    info = parse_ffmpeg_info(r.stderr, str(p), error)
    if info.has_video and count_frames:
        info.num_frames = _count_frames(str(p))
    return info
