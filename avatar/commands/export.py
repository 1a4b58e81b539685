"""`avatar export CKPT --out avatar.ply [--frame N | --audio FILE --frames DIR]`: standard 3DGS .ply.

Without --frame/--frames: the canonical avatar (no deformation). With --frame N: the Gaussians as
deformed at video frame N of --audio FILE (or of the capture's own audio with --data). With
--audio FILE --frames DIR: one .ply per frame (DIR/frame_000000.ply, ...). The file layout is
avatar.io.ply's (x y z nx ny nz f_dc_0..2 opacity scale_0..2 rot_0..3; SH degree 0 since the
avatar's colours are RGB: f_dc = (rgb - 0.5) / C0), which common splat viewers read.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional

import numpy as np
import tyro

from avatar.commands import fail
from avatar.io.ply import to_splat
from avatar.runtime.sources import GaussianFrames


@dataclass
class Export:
    """Export the avatar (canonical or deformed frames) as standard 3DGS .ply files."""

    ckpt: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="CKPT")]
    """Avatar checkpoint (.pt), or "procedural" for the built-in procedural head."""
    out: Path = Path("outputs/export/avatar.ply")
    """Output .ply (canonical avatar, or the single --frame)."""
    frame: Optional[int] = None
    """Export the Gaussians deformed at this video frame of --audio (or of --data's audio)."""
    audio: Optional[Path] = None
    """Speech audio driving the deformation (any format ffmpeg reads)."""
    frames: Optional[Path] = None
    """With --audio: write every frame's deformed Gaussians to this folder (frame_NNNNNN.ply)."""
    data: Optional[Path] = None
    """Capture folder whose audio (and motion codes) drive --frame when --audio is not given."""
    fps: Optional[float] = None
    """Frame rate of the frame index (default: the checkpoint's training fps; 25 procedural)."""
    max_frames: Optional[int] = None
    """With --frames: stop after this many frames."""
    prior: Optional[Path] = None
    """Motion prior driving the deformed frames (default: the one recorded by `avatar train --prior`,
    else the shipped prior, exactly as `avatar drive` plays it; "none" turns it off)."""
    pose: Literal["fixed", "prior"] = "fixed"
    """"prior": the Gaussians move with the prior's head motion (the motion `avatar drive --pose prior`
    shows as a camera move, applied to the head around the reference camera)."""
    pose_scale: float = 1.0
    """Blend of the head motion with the neutral pose (as `avatar drive --pose-scale`)."""
    style: Optional[Path] = None
    """Speaking-style reference for the prior: a capture folder of the person."""
    style_seconds: float = 5.0
    """Seconds at the start of the --style capture that are used."""
    std_scale: bool = True
    """Scale the predicted motion to the person's own spread (as `avatar drive --std-scale`)."""

    def main(self) -> int:

        try:
            written = self.run()
        except ValueError as e:  # DriveError, AudioError, CheckpointError, PlyError, ...
            return fail("export", e)
        print(f"wrote {len(written)} .ply file(s): {written[0]}" + (f" ... {written[-1]}" if len(written) > 1 else ""))
        return 0

    def run(self) -> list:
        from avatar.audio.timeline import DriveError
        from avatar.io.ply import write_ply

        if self.frames is not None and self.audio is None:
            raise DriveError("--frames DIR needs --audio FILE (the audio that drives the frames)")
        if self.frame is not None and self.frames is not None:
            raise DriveError("give either --frame N (one .ply) or --frames DIR (all frames), not both")
        if self.frame is not None and self.frame < 0:
            raise DriveError(f"--frame must be >= 0, got {self.frame}")
        self._check_outputs()
        style = None
        if self.style is not None:
            from avatar.prior.api import style_from_capture

            if not Path(self.style).is_dir():
                raise DriveError(f"--style {self.style}: expected a capture folder of the person")
            style = style_from_capture(self.style, seconds=self.style_seconds)
        gen = GaussianFrames(self.ckpt, self.fps, prior=self.prior, pose=self.pose, pose_scale=self.pose_scale,
                             style=style, std_scale=self.std_scale)
        if self.frame is None and self.frames is None:
            write_ply(self.out, to_splat(gen.canonical()))
            return [self.out]
        wav = self._wav()
        if self.frame is not None:
            n = gen.num_frames(wav)
            if self.frame >= n:
                raise DriveError(f"--frame {self.frame} is past the end of the audio ({n} frames at {gen.fps:g} fps)")
            for t, g in gen.frames(wav, only=self.frame):
                write_ply(self.out, to_splat(g))
            return [self.out]
        from avatar.io.outdir import claim_dir
        from avatar.io.progress import Progress

        owned = claim_dir(self.frames, "ply-frames", arg="--frames", inputs=self._inputs())
        out = []
        limit = self.max_frames if self.max_frames is not None else math.inf
        progress = Progress(int(min(limit, gen.num_frames(wav))), "export", unit="frame")
        for t, g in gen.frames(wav):
            if t >= limit:
                break
            name = f"frame_{t:06d}.ply"
            owned.add(name)  # listed before it exists: a rerun replaces only the files listed
            p = Path(self.frames) / name
            write_ply(p, to_splat(g))
            out.append(p)
            progress.update(len(out))
        progress.close()
        return out

    def _inputs(self) -> list:
        return [self.ckpt, self.audio, self.data, self.prior, getattr(self, "style", None)]

    def _check_outputs(self) -> None:
        """--out / --frames: never an input, never a folder where a file goes; checked before any work."""
        from avatar.audio.timeline import DriveError
        from avatar.io.outdir import check_dir, check_writable_parent, refuse_input_as_output

        if self.frames is None:
            out = Path(self.out)
            if out.is_dir():
                raise DriveError(f"--out {out} is a folder; expected a .ply file path (use --frames DIR for "
                                 f"one .ply per frame)")
            if out.suffix.lower() != ".ply":
                raise DriveError(f"--out must be a .ply file, got {out}")
            refuse_input_as_output(out, self._inputs(), "--out")
            check_writable_parent(out, "--out")
        else:
            check_dir(self.frames, "ply-frames", arg="--frames", inputs=self._inputs())

    def _wav(self) -> np.ndarray:
        from avatar.audio.timeline import DriveError
        from avatar.media.audio import load_audio

        if self.audio is not None:
            return load_audio(self.audio)
        if self.data is not None:
            from avatar.data import load_capture

            a = load_capture(self.data).audio
            if a is None:
                raise DriveError(f"--data {self.data}: the capture has no audio.wav; give --audio FILE")
            return np.asarray(a, np.float32)
        raise DriveError("--frame N needs the audio that drives it: --audio FILE or --data CAPTURE_FOLDER")


