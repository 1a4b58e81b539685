"""`avatar demo`: the README's main job, end to end on this machine.

With no arguments: synthesise a talking-head capture (`avatar synth`), turn it into a dataset
(`avatar capture`), train the `tiny` preset (`avatar train`), then drive the trained avatar with a
different audio clip (`avatar drive`): an mp4 with sound, a preview PNG and metrics JSON.
`--video my.mp4` runs the same path on the user's own video.

This module sits at the CLI layer (docs/architecture.md): it is the one app allowed to tie capture and
training together. Every step writes into its own sub-folder and is skipped on a rerun when its
output is complete, so an interrupted demo resumes where it stopped.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Optional

from avatar.commands import fail
from avatar.io.atomic import atomic_write_json


@dataclasses.dataclass
class Demo:
    """Run the demo: synth (or your --video) -> capture -> train (tiny, or cpu for --video) -> drive with new audio."""

    out: Path = Path("outputs/demo")
    """Output folder: demo.mp4, preview.png, metrics.json and one sub-folder per step."""
    video: Optional[Path] = None
    """Your own talking-head video (mp4/mov/webm/avi); default: a synthetic one."""
    audio: Optional[Path] = None
    """Speech to drive the trained avatar with (any format); default: a different synthetic clip."""
    preset: Optional[str] = None
    """Training preset (configs/); default: tiny for the synthetic demo (minutes on a 2-core CPU), cpu for
    --video (a face-centred 224 px crop where the mouth is ~40 px wide: <= 20 min for a 20-60 s clip)."""
    seconds: float = 12.0
    """Length of the synthetic capture clip in seconds (ignored with --video)."""
    size: Optional[int] = None
    """Capture crop size in pixels (and the synthetic video's); default 192 synthetic, 512 for --video."""
    seed: int = 0
    """Seed of the synthetic capture; the driving clip uses seed + 1."""
    fresh: bool = False
    """Redo every step instead of reusing finished ones."""

    def main(self) -> int:

        try:
            run_demo(self)
        except (ValueError, RuntimeError, FileNotFoundError) as e:
            return fail("demo", e)
        return 0


def _step(name: str, done: bool) -> bool:
    print(f"\n== {name}" + (" (done earlier; reusing it)" if done else ""), flush=True)
    return not done


def run_demo(cfg: Demo) -> dict:
    """Run every step (see module docstring); returns the metrics written to metrics.json."""
    import dataclasses

    own = cfg.video is not None
    cfg = dataclasses.replace(cfg, preset=cfg.preset or ("cpu" if own else "tiny"),
                              size=cfg.size or (512 if own else 192))
    from avatar.commands.drive import Drive
    from avatar.commands.synth import Synth
    from avatar.train.trainer import train
    from capture.pipeline import capture

    t0 = time.perf_counter()
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    synth_dir, data_dir, train_dir = out / "synth", out / "capture", out / "train"
    timings = {}

    # 1. the capture video (synthetic, with ground-truth landmarks) or the user's
    if cfg.video is None:
        video = synth_dir / "video.mp4"
        if _step("1/4 synth: a procedural talking head with speech-like audio", video.is_file() and not cfg.fresh):
            t = time.perf_counter()
            Synth(out=synth_dir, seconds=cfg.seconds, width=cfg.size, height=cfg.size, seed=cfg.seed,
                  overwrite=True).run()
            timings["synth_s"] = time.perf_counter() - t
        known = dict(backend="known", known_landmarks=synth_dir / "ground_truth.npz")
    else:
        video = Path(cfg.video)
        if not video.is_file():
            raise FileNotFoundError(f"--video {video}: no such file")
        print(f"\n== 1/4 using your video {video}")
        known = {}

    # 2. capture (stages skip themselves when already done with the same options)
    print("\n== 2/4 capture: video -> dataset", flush=True)
    t = time.perf_counter()
    capture([video], data_dir, overwrite=cfg.fresh, size=cfg.size, **known)
    timings["capture_s"] = time.perf_counter() - t

    # 3. train
    ckpt = train_dir / "avatar.pt"
    if _step(f"3/4 train: preset {cfg.preset}", ckpt.is_file() and not cfg.fresh):
        t = time.perf_counter()
        from avatar.commands.train import mediapipe_detector

        ckpt = train(data_dir, train_dir, preset=cfg.preset, resume=(train_dir / "checkpoints").is_dir()
                     and not cfg.fresh, make_detector=mediapipe_detector)
        timings["train_s"] = time.perf_counter() - t

    # 4. drive with audio the avatar never heard
    audio = cfg.audio
    if audio is None:
        drive_src = out / "drive_audio"
        audio = drive_src / "audio.wav"
        if not audio.is_file() or cfg.fresh:
            print("\n   (synthesising a different speech clip to drive with)", flush=True)
            Synth(out=drive_src, seconds=6.0, width=64, height=64, seed=cfg.seed + 1, masks=False,
                  spacing=0.008, overwrite=True).run()
    print(f"\n== 4/4 drive: {audio} -> {out / 'demo.mp4'}", flush=True)
    t = time.perf_counter()
    info = Drive(ckpt=str(ckpt), audio=Path(audio), out=out / "demo.mp4", pose="clip", data=data_dir,
                 width=cfg.size, height=cfg.size).run()
    timings["drive_s"] = time.perf_counter() - t

    from avatar.media.image import save_image
    from avatar.media.video import read_frames

    frames = read_frames(out / "demo.mp4")
    for i, frame in enumerate(frames):  # a frame from the middle of the clip, mouth likely open
        if i >= info["frames"] // 2:
            save_image(out / "preview.png", frame)
            break
    frames.close()

    evaluation = train_dir / "eval.json"
    metrics = {
        "capture": str(data_dir), "checkpoint": str(ckpt), "video": str(out / "demo.mp4"),
        "preview": str(out / "preview.png"), "driving_audio": str(audio),
        "drive_frames": info["frames"], "drive_render_fps": info["render_fps"],
        "heldout_eval": ({k: v for k, v in json.loads(evaluation.read_text()).items()
                          if isinstance(v, (int, float, str)) or v is None}
                         if evaluation.is_file() else None),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "total_s": round(time.perf_counter() - t0, 1),
    }
    atomic_write_json(out / "metrics.json", metrics, indent=2)
    print(f"\nDemo done in {metrics['total_s']:.0f} s: {out / 'demo.mp4'} (with sound), "
          f"{out / 'preview.png'}, {out / 'metrics.json'}")
    return metrics
