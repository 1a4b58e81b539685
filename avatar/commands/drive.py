"""`avatar drive CKPT --audio FILE --out out.mp4`: any speech audio -> talking video with the audio.

audio (wav/flac/ogg/mp3/m4a, any rate; avatar.media.audio.load_audio) -> 16 kHz -> per-frame
features -> audio encoder -> deformation -> render -> H.264 mp4 with the audio muxed in. The video
has exactly ceil(duration * fps) frames and the muxed audio is padded to the same length, so the
two durations agree to the frame. Rendering goes through the same FrameSource as `avatar serve`
(push the audio, flush), so offline and live output are the same frames.

Head pose: fixed (the checkpoint's reference camera, or frontal), the training clip's cameras
looped without a jump (--pose clip --data CAPTURE), or a camera-path JSON (--pose path
--camera-path FILE, format in avatar.runtime.camera_path.load_camera_path).
Background: a colour, a plate image (--plate FILE, or the capture's background.png), or
transparent: an RGBA PNG sequence (plus the mp4 over --bg-color).
Stereo (--stereo [--ipd 0.063]): both eyes in one rasterize call, side-by-side mp4 plus one mp4
per eye (OUT.left.mp4, OUT.right.mp4).
"""
from __future__ import annotations

import functools
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Dict, Literal, Optional, Tuple

import tyro

from avatar.audio.timeline import SAMPLE_RATE
from avatar.commands import fail
from avatar.runtime.blink import BlinkConfig

MAX_SIDE = 4096
"""Largest --width/--height per eye (pixels)."""
MAX_FPS = 120.0
"""Highest --fps."""


@dataclass
class Drive:
    """Drive an avatar with speech audio: an mp4 with the audio muxed in (mono or stereo for VR)."""

    ckpt: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="CKPT")]
    """Avatar checkpoint (.pt) from `avatar train`, or "procedural" for the built-in procedural head."""
    audio: Path
    """Speech audio (any format/rate ffmpeg reads; video files use their audio track)."""
    out: Path = Path("outputs/drive/out.mp4")
    """Output mp4 (side by side when --stereo)."""
    width: Optional[int] = None
    """Output width per eye (even); default the checkpoint's camera (256 for the procedural head)."""
    height: Optional[int] = None
    """Output height (even); default as width."""
    fps: Optional[float] = None
    """Frame rate; default the checkpoint's training fps (25 for the procedural head)."""
    pose: Literal["fixed", "clip", "path", "prior"] = "fixed"
    """Head pose source: fixed camera, the training clip's cameras looped (--data), --camera-path, or
    "prior": head motion predicted from the speech by the motion prior, around the reference camera."""
    pose_scale: float = 1.0
    """With --pose prior: blend of the predicted head motion with the neutral (reference) pose:
    0 = the neutral camera, 1 = the predicted motion, in between = damped, > 1 = exaggerated."""
    data: Optional[Path] = None
    """Capture folder the avatar was trained on: --pose clip cameras, the default --background plate,
    and the fps/camera when the checkpoint does not record them."""
    loop: Literal["pingpong", "crossfade"] = "pingpong"
    """How --pose clip loops without a jump: forward-backward, or crossfading the end into the start."""
    crossfade: int = 12
    """Frames blended at the loop point with --loop crossfade."""
    camera_path: Optional[Path] = None
    """Camera-path JSON for --pose path (keyframes; see avatar.runtime.camera_path)."""
    background: Literal["color", "plate", "transparent"] = "color"
    """Behind the avatar: --bg-color, a plate image, or transparent (RGBA PNG sequence)."""
    bg_color: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Background RGB in [0, 1] (also under the mp4 preview of a transparent render)."""
    plate: Optional[Path] = None
    """Background plate image (default with --background plate: the capture's background.png)."""
    png_dir: Optional[Path] = None
    """Where the RGBA PNG sequence goes with --background transparent (default OUT_rgba/)."""
    stereo: bool = False
    """Stereo pair for VR: side-by-side mp4 plus per-eye mp4s, both eyes in one rasterize call."""
    ipd: float = 0.063
    """Stereo inter-pupillary distance in metres."""
    eyes: bool = True
    """With --stereo, also write OUT.left.mp4 and OUT.right.mp4."""
    backend: str = "auto"
    """Rasterizer backend (auto, cuda, gsplat, cpu, torch)."""
    device: str = "auto"
    """Torch device of the model: auto (CUDA when present, else CPU; printed at start), cpu, cuda."""
    crf: int = 18
    """H.264 quality (lower = better, bigger)."""
    blink: BlinkConfig = field(default_factory=BlinkConfig)
    """Procedural blinks."""
    prior: Optional[Path] = None
    """Motion-prior checkpoint (`avatar prior train`): motion codes, blinks (and with --pose prior head
    motion) predicted from the audio drive the avatar. Default: the prior recorded in the checkpoint by
    `avatar train --prior`, else the prior shipped in the package (for avatars that take motion codes);
    "none" turns it off (neutral motion, procedural blinks)."""
    std_scale: bool = True
    """Scale the prior's predicted motion to the person's own spread per code (the checkpoint's meta
    "motion_std"); --no-std-scale keeps the pool's typical amplitude."""
    style: Optional[Path] = None
    """Speaking-style reference for the prior: a capture folder of the person, or a video of them
    (captured once with `avatar capture` into OUT's folder, style_captures/<video name>/)."""
    style_seconds: float = 5.0
    """Seconds at the start of the --style reference that are used."""

    def main(self) -> int:

        try:
            info = self.run()
        except ValueError as e:  # DriveError, AudioError, CheckpointError, CameraPathError, ...
            return fail("drive", e)
        print(f"wrote {info['out']} ({info['frames']} frames, {info['duration_s']:.2f} s, "
              f"{info['render_fps']:.1f} frames/s)" + "".join(f"\n      {p}" for p in info["extra_outputs"]))
        return 0

    # ------------------------------------------------------------------------------------------
    @functools.cached_property
    def capture(self):
        """--data, loaded once (avatar.data.load_capture) and passed down to everything that needs it."""
        from avatar.data import load_capture

        return load_capture(self.data) if self.data is not None else None

    def build_source(self, wav=None):
        """The FrameSource for these options (ViewConfig, pose, backdrop resolved)."""
        from avatar.audio.timeline import DriveError
        from avatar.runtime import camera_path as cp
        from avatar.runtime.camera_path import FixedPose
        from avatar.runtime.sources import (
            AvatarSource,
            ProceduralHeadSource,
            load_avatar,
        )
        from avatar.runtime.view import ViewConfig, procedural_camera

        procedural = self.ckpt == "procedural"
        avatar = None
        if not procedural:
            import sys

            from avatar.model.device import resolve_device

            dev, why = resolve_device(self.device)
            print(f"[drive] device: {dev} ({why})", file=sys.stderr, flush=True)
            avatar = load_avatar(Path(self.ckpt), dev)
        if avatar is not None and self.data is not None:
            from avatar.runtime.sources import apply_capture_defaults

            apply_capture_defaults(avatar, self.capture)
        fps = float(self.fps or (25.0 if procedural else avatar.fps))
        base = procedural_camera(256, 256) if procedural else avatar.camera()
        w = self.width or (base.width if not self.height else round(base.width * self.height / base.height))
        h = self.height or (base.height if not self.width else round(base.height * w / base.width))
        if w % 2 or h % 2 or w < 2 or h < 2:
            raise DriveError(f"--width/--height must be positive and even (H.264 yuv420p), got {w}x{h}")
        if w > MAX_SIDE or h > MAX_SIDE:
            raise DriveError(f"--width/--height {w}x{h}: at most {MAX_SIDE} pixels per side (per eye)")
        if not 0 < fps <= MAX_FPS:
            raise DriveError(f"--fps {fps:g}: expected a frame rate in (0, {MAX_FPS:g}]")
        view = ViewConfig(w, h, self.stereo, self.ipd, self.backend)
        if self.pose == "fixed":
            pose = FixedPose(base.resized(w, h))
        elif self.pose == "clip":
            if self.data is None:
                raise DriveError("--pose clip needs --data CAPTURE_FOLDER (the training clip's cameras)")
            pose = cp.clip_pose_from_capture(self.capture, w, h, self.loop, self.crossfade)
        elif self.pose == "prior":
            pose = None  # the prior's head motion, set below
        else:
            if self.camera_path is None:
                raise DriveError("--pose path needs --camera-path FILE.json")
            pose = cp.load_camera_path(self.camera_path, fps)
        backdrop = self._backdrop(w, h)
        if procedural:
            if (self.prior is not None and str(self.prior).lower() != "none") or self.style is not None \
                    or self.pose == "prior":
                raise DriveError("--prior/--style/--pose prior need an avatar checkpoint (the procedural head has "
                                 "no motion codes)")
            return ProceduralHeadSource(view, fps, pose, backdrop, blink=self.blink)
        from avatar.runtime.sources import prior_motion, recorded_prior

        motion_fn = blink_fn = None
        prior = recorded_prior(avatar, self.prior)
        if prior is None and (self.style is not None or self.pose == "prior"):
            raise DriveError("--style/--pose prior need a motion prior: pass --prior PRIOR.pt (none is recorded "
                             "in the checkpoint or shipped for its motion space)")
        if prior is not None:
            from avatar.prior.api import style_from_capture

            style = None
            if self.style is not None:
                style = style_from_capture(self._style_capture(), seconds=self.style_seconds, prior_path=prior)
            tracks = prior_motion(avatar, wav, fps, prior, style=style, std_scale=self.std_scale)
            motion_fn, blink_fn = tracks.motion_at, tracks.blink_at
            if self.pose == "prior":
                from avatar.runtime.sources import PriorPose

                pose = PriorPose(base.resized(w, h), tracks, self.pose_scale)
        return AvatarSource(avatar, view, fps=fps, pose=pose, backdrop=backdrop, blink=self.blink,
                            streaming=False, batch=4, motion_fn=motion_fn, blink_fn=blink_fn)

    def _style_capture(self) -> Path:
        """--style as a capture folder: the folder itself, or a video captured (once, in-process) into
        OUT's folder/style_captures/<video stem>/."""
        import sys

        from avatar.audio.timeline import DriveError

        s = Path(self.style)
        if s.is_dir():
            return s
        if not s.is_file():
            raise DriveError(f"--style {s}: not found (expected a capture folder or a video file of the person)")
        cap = Path(self.out).parent / "style_captures" / s.stem
        done = cap / "transforms.json"
        if done.is_file() and done.stat().st_mtime >= s.stat().st_mtime:
            return cap  # captured before
        from capture.errors import CaptureError
        from capture.pipeline import capture

        print(f"[drive] capturing the style reference {s} into {cap}", file=sys.stderr, flush=True)
        try:
            capture([s], cap, log=lambda msg: None)
        except CaptureError as e:
            raise DriveError(f"--style {s}: capturing it into {cap} failed: {e}") from None
        if not done.is_file():
            raise DriveError(f"--style {s}: `avatar capture` wrote no capture folder at {cap}")
        return cap

    def _backdrop(self, w: int, h: int):
        import numpy as np

        from avatar.audio.timeline import DriveError
        from avatar.runtime.stream import Backdrop

        c = tuple(float(v) for v in self.bg_color)
        if len(c) != 3 or not all(0.0 <= v <= 1.0 for v in c):
            raise DriveError(f"--bg-color must be three numbers in [0, 1], got {self.bg_color}")
        if self.background == "transparent":
            return Backdrop("transparent", c)
        if self.background == "color":
            return Backdrop("color", c)
        import cv2

        if self.plate is not None:
            img = cv2.imread(str(self.plate), cv2.IMREAD_COLOR)
            if img is None:
                raise DriveError(f"--plate {self.plate}: not a readable image file")
            plate = img[..., ::-1].astype(np.float32) / 255.0
        elif self.data is not None:
            plate = np.asarray(self.capture.background, np.float32)
        else:
            raise DriveError("--background plate needs --plate IMAGE or --data CAPTURE_FOLDER")
        plate = cv2.resize(plate, (w, h), interpolation=cv2.INTER_AREA)
        return Backdrop("plate", c, np.clip(plate, 0, 1))

    def run(self) -> Dict[str, Any]:
        import numpy as np

        from avatar.audio.timeline import DriveError, num_frames
        from avatar.media.audio import load_audio
        from avatar.media.video import VideoWriter
        from avatar.runtime.stream import Backdrop

        from avatar.io.outdir import check_dir, check_writable_parent, refuse_input_as_output

        out = Path(self.out)
        if out.suffix.lower() != ".mp4":
            raise DriveError(f"--out must be an .mp4 file, got {out}")
        if out.is_dir():
            raise DriveError(f"--out {out} is a folder; expected an .mp4 file path")
        inputs = [self.audio, self.ckpt, self.data, self.plate, self.camera_path, self.style, self.prior]
        outs = [out] + ([out.with_name(f"{out.stem}.{eye}.mp4") for eye in ("left", "right")]
                        if self.stereo and self.eyes else [])
        for o in outs:
            refuse_input_as_output(o, inputs, "--out")
            check_writable_parent(o, "--out")
        png_dir = None
        if self.background == "transparent":  # checked before any rendering: ours, new, or refused
            png_dir = Path(self.png_dir or out.with_name(out.stem + "_rgba"))
            check_dir(png_dir, "frames", arg="--png-dir", inputs=inputs)
        wav = load_audio(self.audio)  # [S] float32 16 kHz (at most avatar.media.audio.MAX_AUDIO_SECONDS)
        if len(wav) == 0:
            raise DriveError(f"--audio {self.audio}: no audio samples")
        src = self.build_source(wav)
        n_total = num_frames(len(wav), src.fps)
        W, H = src.width * src.views, src.height
        writers, extra = [], []
        png_tmp = None
        preview = Backdrop("color", tuple(self.bg_color))
        count = 0
        t0 = time.perf_counter()
        try:
            import cv2

            from avatar.io.progress import Progress

            # the mp4s carry the user's own audio file (its rate and channels); the model hears 16 kHz mono
            writers.append(VideoWriter(out, src.fps, W, H, crf=self.crf, audio_file=self.audio))
            for p in outs[1:]:
                writers.append(VideoWriter(p, src.fps, src.width, H, crf=self.crf, audio_file=self.audio))
                extra.append(p)
            if png_dir is not None:
                png_dir.parent.mkdir(parents=True, exist_ok=True)
                png_tmp = Path(tempfile.mkdtemp(prefix=f".{png_dir.name}.", dir=png_dir.parent))
                extra.append(png_dir)
            progress = Progress(n_total, "drive", unit="frame")

            def consume(frames):
                nonlocal count
                for f in frames:
                    if f.index != count:
                        raise AssertionError(f"frame {f.index} out of order (expected {count})")
                    if png_tmp is not None:
                        rgba = f.rgba
                        cv2.imwrite(str(png_tmp / f"{f.index:06d}.png"), rgba[..., [2, 1, 0, 3]])
                        # mp4 preview: straight colour over the background colour
                        a = rgba[..., 3:4].astype(np.float32) / 255.0
                        img = (rgba[..., :3].astype(np.float32) / 255.0 * a + (1 - a) * np.asarray(preview.color))
                        img = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
                    else:
                        img = f.image
                    writers[0].write(img)
                    if len(writers) > 1:
                        views = f.rgb if png_tmp is None else np.stack(np.split(img, 2, axis=1))
                        writers[1].write(views[0])
                        writers[2].write(views[1])
                    count += 1
                    progress.update(count)
            step = SAMPLE_RATE  # push 1 s at a time: memory stays bounded for long audio
            for i in range(0, len(wav), step):
                consume(src.push_audio(wav[i:i + step]))
            consume(src.flush())
            if count != n_total:
                raise AssertionError(f"rendered {count} frames, expected {n_total}")
            render_s = time.perf_counter() - t0
            progress.close()
            for w in writers:
                w.close()
            if png_tmp is not None:
                from avatar.io.outdir import publish_dir
                from avatar.media.audio import save_wav

                save_wav(png_tmp / "audio.wav", wav, SAMPLE_RATE)
                publish_dir(png_tmp, png_dir, "frames", arg="--png-dir")
        except BaseException:
            for w in writers:
                w.abort()
            if png_tmp is not None:
                shutil.rmtree(png_tmp, ignore_errors=True)
            raise
        return {"out": out, "frames": count, "duration_s": len(wav) / SAMPLE_RATE, "fps": src.fps,
                "render_fps": count / max(render_s, 1e-9), "extra_outputs": extra,
                "width": W, "height": H}

