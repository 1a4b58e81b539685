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
from typing import Annotated, Dict, Iterator, Optional, Tuple

import numpy as np
import tyro

SH_C0 = 0.28209479177387814


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

    def main(self) -> int:
        import sys

        try:
            written = self.run()
        except ValueError as e:  # DriveError, AudioError, CheckpointError, PlyError, ...
            print(f"avatar export: error: {e}", file=sys.stderr)
            return 1
        print(f"wrote {len(written)} .ply file(s): {written[0]}" + (f" ... {written[-1]}" if len(written) > 1 else ""))
        return 0

    def run(self) -> list:
        from avatar.runtime.stream import DriveError
        from avatar.io.ply import write_ply

        if self.frames is not None and self.audio is None:
            raise DriveError("--frames DIR needs --audio FILE (the audio that drives the frames)")
        if self.frame is not None and self.frames is not None:
            raise DriveError("give either --frame N (one .ply) or --frames DIR (all frames), not both")
        if self.frame is not None and self.frame < 0:
            raise DriveError(f"--frame must be >= 0, got {self.frame}")
        gen = GaussianFrames(self.ckpt, self.fps)
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
        out = []
        limit = self.max_frames if self.max_frames is not None else math.inf
        for t, g in gen.frames(wav):
            if t >= limit:
                break
            p = Path(self.frames) / f"frame_{t:06d}.ply"
            write_ply(p, to_splat(g))
            out.append(p)
        return out

    def _wav(self) -> np.ndarray:
        from avatar.runtime.stream import DriveError
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


def to_splat(g: Dict[str, np.ndarray]):
    """Activated Gaussians (means, quats, scales, opacities, colors RGB) -> avatar.io.ply.SplatData."""
    from avatar.io.ply import SplatData

    q = np.asarray(g["quats"], np.float32)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    op = np.clip(np.asarray(g["opacities"], np.float64), 1e-6, 1 - 1e-6)
    rgb = np.asarray(g["colors"], np.float32)
    return SplatData(means=np.asarray(g["means"], np.float32), quats=q.astype(np.float32),
                     log_scales=np.log(np.maximum(np.asarray(g["scales"], np.float64), 1e-12)).astype(np.float32),
                     opacity_logits=np.log(op / (1 - op)).astype(np.float32),
                     sh=((rgb - 0.5) / SH_C0).astype(np.float32)[:, None, :])


class GaussianFrames:
    """Posed Gaussians of an avatar per video frame of some audio (numpy dicts)."""

    def __init__(self, ckpt: str, fps: Optional[float] = None):
        self.procedural = ckpt == "procedural"
        if self.procedural:
            self.fps = float(fps or 25.0)
        else:
            from avatar.runtime.stream import load_avatar

            self.avatar = load_avatar(Path(ckpt))
            self.model = self.avatar.model
            self.fps = float(fps or self.avatar.fps)

    def num_frames(self, wav: np.ndarray) -> int:
        from avatar.runtime.stream import num_frames

        return num_frames(len(wav), self.fps)

    def canonical(self) -> Dict[str, np.ndarray]:
        if self.procedural:
            from avatar.synth.head import procedural_head

            return _np(procedural_head(0.0, 0.0))
        import torch

        with torch.no_grad():
            return _np(self.model.deformed(use_deform=False))

    def frames(self, wav: np.ndarray, only: Optional[int] = None) -> Iterator[Tuple[int, Dict[str, np.ndarray]]]:
        """(t, Gaussians) for every frame of the audio (or just frame `only`)."""
        from avatar.runtime.stream import BlinkSchedule, MouthEnvelope, num_frames

        n = num_frames(len(wav), self.fps)
        blinks = BlinkSchedule(self.fps)
        if self.procedural:
            from avatar.synth.head import procedural_head

            env = MouthEnvelope(self.fps)
            rows = env.push(wav) + env.finish()
            for t in range(n):
                b = blinks(t)
                if only is None or t == only:
                    yield t, _np(procedural_head(float(rows[t][0]), b))
            return
        import torch

        from avatar.runtime.stream import audio_feature_config
        from avatar.audio.features import feature_windows, frame_features

        feats = frame_features(wav, self.fps, n, audio_feature_config(self.model))  # [F, D]
        wins = feature_windows(feats, self.model.window)  # [F, 2k+1, D]
        with torch.no_grad():
            for t in range(n):
                b = blinks(t)
                if only is not None and t != only:
                    continue
                z = self.model.encode_audio(wins[t])
                yield t, _np(self.model.deformed(z, None, torch.tensor(float(b))))


def _np(g) -> Dict[str, np.ndarray]:
    keys = ("means", "quats", "scales", "opacities", "colors")
    return {k: np.asarray(g[k].detach().cpu().numpy() if hasattr(g[k], "detach") else g[k], np.float32) for k in keys}
