"""`avatar render`: a turntable video + still of the built-in procedural Gaussian head.

Needs no capture and no training: it exercises the whole render path (procedural head ->
avatar.ops.rasterize -> H.264 mp4), so it is the smoke test of an install on any machine.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Literal

import numpy as np


@dataclasses.dataclass
class Render:
    """Render the built-in procedural head on a turntable to an mp4 and a PNG."""

    out: Path = Path("outputs/render")
    """Output folder: turntable.mp4 and turntable.png are written here."""
    size: int = 256
    """Frame width and height in pixels (even)."""
    frames: int = 50
    """Frames in one full turn."""
    fps: float = 25.0
    """Frame rate of the mp4."""
    distance: float = 0.75
    """Camera distance from the head centre, metres."""
    elevation_deg: float = 5.0
    """Camera elevation above the head's horizontal plane, degrees."""
    mouth_open: float = 0.3
    """Jaw opening of the head, 0 (closed) .. 1 (wide)."""
    backend: Literal["auto", "cuda", "gsplat", "cpu", "torch"] = "auto"
    """Rasterizer backend (auto = cuda -> gsplat -> cpu -> torch)."""

    def main(self) -> None:
        if self.size < 2 or self.size % 2:
            raise ValueError(f"--size must be a positive even number of pixels, got {self.size}")
        if self.frames < 1:
            raise ValueError(f"--frames must be >= 1, got {self.frames}")
        path = render_turntable(self)
        print(f"wrote {path} and {path.with_suffix('.png')}")


def _orbit_viewmat(azimuth: float, elevation: float, distance: float) -> np.ndarray:
    """World-to-camera [4, 4] of a camera on a sphere around the head centre looking at it
    (azimuth 0 = frontal, i.e. the camera on the -z side of the face)."""
    from avatar.data.cameras import look_at

    pos = distance * np.array([math.sin(azimuth) * math.cos(elevation), -math.sin(elevation),
                               -math.cos(azimuth) * math.cos(elevation)])
    return look_at(pos)


def render_turntable(cfg: Render) -> Path:
    """Render cfg.frames views around the head; returns the mp4 path (the PNG is the frontal view)."""
    import torch
    from tqdm import tqdm

    from avatar.media.image import save_image
    from avatar.media.video import VideoWriter
    from avatar.ops import rasterize
    from avatar.runtime.camera_path import frontal_camera
    from avatar.synth.head import procedural_head

    g = {k: torch.as_tensor(v) for k, v in procedural_head(cfg.mouth_open, 0.0).items()}
    K = torch.as_tensor(frontal_camera(cfg.size, cfg.size, cfg.distance, 28.0).K)[None]  # [1, 3, 3]
    bg = torch.ones(1, 3)
    cfg.out.mkdir(parents=True, exist_ok=True)
    mp4 = cfg.out / "turntable.mp4"
    t0 = time.perf_counter()
    with VideoWriter(mp4, cfg.fps, cfg.size, cfg.size) as writer, torch.no_grad():
        for i in tqdm(range(cfg.frames), desc="turntable", unit="frame"):
            V = _orbit_viewmat(2 * math.pi * i / cfg.frames, math.radians(cfg.elevation_deg),
                               cfg.distance)
            rgb, _, meta = rasterize(g["means"], g["quats"], g["scales"], g["opacities"],
                                     g["colors"], torch.as_tensor(V, dtype=torch.float32)[None], K,
                                     cfg.size, cfg.size, backgrounds=bg, backend=cfg.backend)
            frame = rgb[0].clamp(0, 1).numpy()  # [H, W, 3]
            writer.write(frame)
            if i == 0:
                save_image(mp4.with_suffix(".png"), frame)
    dt = time.perf_counter() - t0
    print(f"{cfg.frames} frames of {g['means'].shape[0]} Gaussians at {cfg.size}² "
          f"with backend {meta['backend']}: {cfg.frames / dt:.1f} frames/s")
    return mp4
