"""Video out (H.264 yuv420p mp4, AAC audio muxed) and frames in, streamed through ffmpeg.

VideoWriter(path, fps, width, height, audio=None [S] float32, sr=SAMPLE_RATE, crf=18, preset="fast")
    .write(frame [H,W,3] uint8 RGB, or float in [0,1]); .close(); a context manager.
    Frames stream into ffmpeg as they come (never all in memory). On close, the audio (if any) is
    trimmed or zero-padded to exactly num_frames / fps seconds and muxed as AAC (48 kHz) next to the
    copied video stream, so audio and video durations agree to well under one frame. With
    audio_file=PATH instead, the soundtrack is that file's first audio stream as it is (its own sample
    rate and channels, AAC), trimmed or padded the same way. The file
    appears atomically at `path` on a successful close; an exception inside the `with` block (or
    abort()) leaves no partial file. Width and height must be even (yuv420p).
read_frames(path) -> iterator of [H,W,3] uint8 RGB
    Decodes the first video stream as stored (ffmpeg's autorotation is off: rotation metadata is the
    capture probe's business). VideoError naming the file when it is missing, empty, unreadable or
    has no video stream; a stream truncated mid-way yields the frames before the damage and warns.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from avatar.media.audio import save_wav
from avatar.media.timeline import SAMPLE_RATE
from avatar.media.ffmpeg import MediaError, ffmpeg_exe, run_ffmpeg
from avatar.media.probe import probe


class VideoError(MediaError):
    """A video file could not be read or written."""


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


class VideoWriter:
    """Stream RGB frames into an H.264 mp4 with optional AAC audio (see module docstring)."""

    def __init__(self, path, fps: float, width: int, height: int, audio: Optional[np.ndarray] = None,
                 sr: int = SAMPLE_RATE, crf: int = 18, preset: str = "fast", audio_file=None):
        self.path = Path(path)
        self.audio_file = Path(audio_file) if audio_file is not None else None
        if not (isinstance(fps, (int, float)) and fps > 0):
            raise VideoError(f"VideoWriter({self.path}): fps must be > 0, got {fps!r}")
        for name, v in (("width", width), ("height", height)):
            if not isinstance(v, (int, np.integer)) or v <= 0 or v % 2:
                raise VideoError(f"VideoWriter({self.path}): {name} must be a positive even int "
                                 f"(H.264 yuv420p), got {v!r}")
        if audio is not None:
            audio = np.asarray(audio)
            if audio.ndim != 1 or not np.issubdtype(audio.dtype, np.floating):
                raise VideoError(f"VideoWriter({self.path}): audio must be a float waveform [S], "
                                 f"got {audio.dtype} {audio.shape}")
            if not isinstance(sr, (int, np.integer)) or sr <= 0:
                raise VideoError(f"VideoWriter({self.path}): sr must be a positive int, got {sr!r}")
        self.fps, self.width, self.height = float(fps), int(width), int(height)
        self.audio, self.sr = audio, int(sr)
        self.num_frames = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temp_dirs(self.path)
            self._dir = tempfile.mkdtemp(prefix=f".{self.path.name}.{os.getpid()}.", dir=self.path.parent)
        except OSError as e:
            self._closed, self._proc = True, None
            raise VideoError(f"{self.path}: cannot write in {self.path.parent} ({e.strerror or e})") from None
        self._video = os.path.join(self._dir, "video.mp4")
        self._log = open(os.path.join(self._dir, "ffmpeg.log"), "wb")
        rate = _rate(fps)
        cmd = [ffmpeg_exe(), "-hide_banner", "-v", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
               "-framerate", f"{rate.numerator}/{rate.denominator}", "-i", "pipe:0",
               "-an", "-c:v", "libx264", "-preset", preset, "-crf", str(int(crf)), "-pix_fmt", "yuv420p",
               "-movflags", "+faststart", self._video]
        self._proc: Optional[subprocess.Popen] = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log)
        self._closed = False

    def _ffmpeg_message(self) -> str:
        self._log.flush()
        with open(self._log.name, "rb") as f:
            lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        return " | ".join(lines[-4:]) or "(no message)"

    def write(self, frame) -> None:
        """Append one frame [H,W,3]: uint8 RGB, or float RGB in [0,1] (clipped)."""
        if self._closed:
            raise VideoError(f"VideoWriter({self.path}): write() after close()")
        if hasattr(frame, "detach"):  # torch tensor
            frame = frame.detach().cpu().numpy()
        f = np.asarray(frame)
        if f.shape != (self.height, self.width, 3):
            raise VideoError(f"VideoWriter({self.path}): frame {self.num_frames} has shape {f.shape}, "
                             f"expected ({self.height}, {self.width}, 3)")
        if f.dtype != np.uint8:
            if not np.issubdtype(f.dtype, np.floating):
                raise VideoError(f"VideoWriter({self.path}): frames must be uint8 or float, got {f.dtype}")
            f = np.round(np.clip(np.nan_to_num(f), 0.0, 1.0) * 255.0).astype(np.uint8)
        try:
            self._proc.stdin.write(np.ascontiguousarray(f).tobytes())
        except BrokenPipeError:
            self._proc.wait()
            msg = self._ffmpeg_message()
            self.abort()
            raise VideoError(f"{self.path}: ffmpeg stopped while encoding: {msg}") from None
        self.num_frames += 1

    def close(self) -> Path:
        """Finish encoding, mux audio, move the file into place; returns the path."""
        if self._closed:
            return self.path
        try:
            self._proc.stdin.close()
            rc = self._proc.wait()
            if rc != 0:
                raise VideoError(f"{self.path}: ffmpeg failed encoding video: {self._ffmpeg_message()}")
            if self.num_frames == 0:
                raise VideoError(f"{self.path}: no frames were written")
            out = self._video
            if self.audio_file is not None:  # the user's own soundtrack: its rate and channels, AAC
                out = os.path.join(self._dir, "muxed.mp4")
                run_ffmpeg(["-y", "-i", self._video, "-i", str(self.audio_file), "-map", "0:v:0", "-map", "1:a:0",
                            "-c:v", "copy", "-af", "apad", "-t", f"{self.num_frames / self.fps:.6f}",
                            "-c:a", "aac", "-movflags", "+faststart", out], path=self.path, error=VideoError)
            elif self.audio is not None:
                n = int(round(self.num_frames / self.fps * self.sr))
                a = np.zeros(n, np.float32)
                m = min(n, len(self.audio))
                a[:m] = self.audio[:m]
                wav = os.path.join(self._dir, "audio.wav")
                save_wav(wav, a, self.sr)
                out = os.path.join(self._dir, "muxed.mp4")
                run_ffmpeg(["-y", "-i", self._video, "-i", wav, "-map", "0:v:0", "-map", "1:a:0",
                            "-c:v", "copy", "-c:a", "aac", "-b:a", "128k", "-ar", "48000",
                            "-movflags", "+faststart", out], path=self.path, error=VideoError)
            os.replace(out, self.path)
        finally:
            self._cleanup()
        return self.path

    def abort(self) -> None:
        """Stop without producing a file."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        self._closed = True
        if self._proc is not None and self._proc.stdin and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
        if not self._log.closed:
            self._log.close()
        for name in os.listdir(self._dir) if os.path.isdir(self._dir) else []:
            os.unlink(os.path.join(self._dir, name))
        if os.path.isdir(self._dir):
            os.rmdir(self._dir)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self):
        if not getattr(self, "_closed", True):
            self.abort()


def remove_stale_temp_dirs(path) -> None:
    """Remove the hidden work folders (.NAME.PID.XXXX/) that writers of `path` left when their process was
    killed (SIGKILL, power loss: no cleanup ran); folders of a process still running are kept."""
    p = Path(path)
    prefix = f".{p.name}."
    try:
        entries = list(os.scandir(p.parent))
    except OSError:
        return
    for e in entries:
        if not (e.name.startswith(prefix) and e.is_dir(follow_symlinks=False)):
            continue
        pid = e.name[len(prefix):].split(".")[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except OSError:
            continue
        names = os.listdir(e.path)
        if set(names) <= {"video.mp4", "ffmpeg.log", "audio.wav", "muxed.mp4"}:  # ours, nothing else
            for n in names:
                os.unlink(os.path.join(e.path, n))
            os.rmdir(e.path)


def read_frames(path) -> Iterator[np.ndarray]:
    """Yield the frames of `path` as [H,W,3] uint8 RGB (stored orientation, no autorotation)."""
    info = probe(path, VideoError, count_frames=False)
    if not info.has_video:
        raise VideoError(f"{info.path}: no video stream in this file")
    if info.width <= 0 or info.height <= 0:
        raise VideoError(f"{info.path}: could not determine the video frame size")
    return _frames(info.path, info.width, info.height)


def rawvideo_frames(cmd: Sequence[str], width: int, height: int, stats: dict) -> Iterator[np.ndarray]:
    """Run an ffmpeg command that writes rgb24 rawvideo to stdout; yield uint8 [height, width, 3] frames.

    When the generator ends (exhausted, or closed early: ffmpeg is then killed) `stats` holds "frames",
    "returncode" and "stderr". stderr goes to a temporary file so a chatty decoder never blocks the pipe.
    """
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=log)
        n, size, buf = 0, width * height * 3, b""
        try:
            while True:
                buf = proc.stdout.read(size)
                if len(buf) < size:
                    break
                n += 1
                yield np.frombuffer(buf, np.uint8).reshape(height, width, 3)
        finally:
            if proc.poll() is None and n and len(buf) == size:  # consumer stopped early
                proc.kill()
            proc.stdout.close()
            rc = proc.wait()
            log.seek(0)
            stats.update(frames=n, returncode=rc, stderr=log.read().decode("utf-8", "replace"))


def _frames(p: Path, w: int, h: int) -> Iterator[np.ndarray]:
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-noautorotate", "-i", str(p),
           "-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    stats: dict = {}
    yield from rawvideo_frames(cmd, w, h, stats)
    n, rc = stats["frames"], stats["returncode"]
    msg = " | ".join(ln.strip() for ln in stats["stderr"].splitlines() if ln.strip())[-300:]
    if n == 0:
        raise VideoError(f"{p}: no video frames could be decoded (rc={rc}): {msg or 'empty stream'}")
    if rc != 0 or msg:
        warnings.warn(f"{p}: video decoded with errors after {n} frames (truncated or damaged?): {msg}",
                      stacklevel=2)
