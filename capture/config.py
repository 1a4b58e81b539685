"""CaptureConfig: every knob of the capture pipeline (tyro turns these into `avatar capture --help`)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal, Optional


@dataclasses.dataclass
class CaptureConfig:
    """Settings of `avatar capture` (the stage markers hash the fields each stage depends on)."""

    fps: float = 25.0
    """Output frame rate: every input (any rate, variable rate) is resampled to this constant rate."""
    size: int = 512
    """Side of the square head-centred crop written to images/ (pixels)."""
    crop_mode: Literal["fixed", "smooth"] = "fixed"
    """fixed: one box for the whole clip (constant intrinsics, consistent background plate);
    smooth: a per-frame box following the head, temporally smoothed (per-frame intrinsics)."""
    crop_scale: float = 2.0
    """Crop side = crop_scale x face size (the larger side of the face-oval box), clamped to the frame."""
    crop_smooth_s: float = 0.5
    """Gaussian smoothing (seconds, sigma) of the crop box in 'smooth' mode."""
    work_max_size: int = 1280
    """Frames are decoded (by ffmpeg, so a 4K input never exists in memory at full size) so that
    their longer side is at most this many pixels; all analysis and cropping use these frames."""
    work_format: Literal["auto", "raw", "jpg", "png"] = "auto"
    """Format of the decoded working frames in OUT/.capture: raw (uncompressed, no decode cost),
    jpg (quality 97, 4:4:4), png (lossless); auto = raw when the stream fits in raw_max_gb, else jpg."""
    raw_max_gb: float = 2.0
    """Disk budget (GB) per stream for raw working frames under work_format auto."""
    backend: Literal["mediapipe", "face-alignment", "known"] = "mediapipe"
    """Landmark backend: mediapipe face mesh (478 points, weights in the wheel), face-alignment
    (optional package, 68 points fitted to the 478 topology), known (landmarks2d from a
    ground_truth.npz, for synthetic videos)."""
    known_landmarks: Optional[Path] = None
    """ground_truth.npz for the 'known' backend (default: ground_truth.npz next to the video)."""
    max_faces: int = 3
    """Faces detected per frame; the largest is tracked consistently (a warning says so)."""
    min_detection_confidence: float = 0.5
    """Face detection / tracking confidence of the mediapipe face mesh."""
    focal: Optional[float] = None
    """Focal length in pixels of the input video (display orientation); None: estimated from the
    landmarks (PnP reprojection error over a frame subset)."""
    pose_smooth_sigma: float = 1.0
    """Gaussian smoothing (frames, sigma) of head rotation and translation; 0 disables."""
    blink_closed_ratio: float = 0.35
    """Eye aspect ratio, as a fraction of the person's open-eye EAR, at which blink = 1 (closed)."""
    min_seconds: float = 3.0
    """Refuse captures with fewer usable (face-tracked) seconds than this."""
    long_loss_s: float = 0.5
    """Face losses longer than this (seconds) are reported with their time ranges."""
    allow_no_audio: bool = False
    """Accept a video without an audio track (training that needs audio refuses later)."""
    max_av_offset_s: float = 0.1
    """Warn when audio and video durations differ by more than this (seconds)."""
    holdout_fraction: float = 1.0 / 11.0
    """Fraction of frames (the last ones) held out as the test split."""
    image_format: Literal["png", "jpg"] = "jpg"
    """Format of images/ (nerfstudio and avatar.data read both); masks are always PNG. jpg (quality
    95, 4:4:4 chroma) is ~50 dB PSNR from lossless and 10x faster to encode and 5x faster to decode
    than png at compression 1 (12 ms / 5 ms per 512x512 frame here)."""
    png_compression: int = 1
    """PNG compression level (0-9) of images/ and masks/ (1: fast, ~2x larger than 9)."""
    jpeg_quality: int = 95
    """JPEG quality of images/ when image_format is jpg."""
    seg_threshold: float = 0.5
    """Selfie-segmentation probability above which a pixel is the person."""
    background_frames: int = 40
    """Frames sampled (evenly) for the background plate's temporal median."""
    threads: int = 2
    """Worker threads for image decode/encode."""
    report: bool = True
    """Write report/ (contact sheet, plots, summary.json)."""


MAX_FPS = 120.0
MAX_SIZE = 4096


def check_config(cfg: CaptureConfig) -> None:
    """Refuse impossible option values before any stage runs (CaptureError naming the flag)."""
    from .errors import CaptureError

    def need(ok: bool, flag: str, value, expected: str) -> None:
        if not ok:
            raise CaptureError(f"{flag} {value}: expected {expected}")

    need(0 < cfg.fps <= MAX_FPS, "--fps", cfg.fps, f"a frame rate in (0, {MAX_FPS:g}]")
    need(16 <= cfg.size <= MAX_SIZE, "--size", cfg.size, f"a crop side in pixels in [16, {MAX_SIZE}]")
    need(64 <= cfg.work_max_size <= 2 * MAX_SIZE, "--work-max-size", cfg.work_max_size,
         f"pixels in [64, {2 * MAX_SIZE}]")
    need(cfg.crop_scale > 0, "--crop-scale", cfg.crop_scale, "a number > 0")
    need(cfg.crop_smooth_s >= 0, "--crop-smooth-s", cfg.crop_smooth_s, "seconds >= 0")
    need(cfg.raw_max_gb >= 0, "--raw-max-gb", cfg.raw_max_gb, "gigabytes >= 0")
    need(cfg.max_faces >= 1, "--max-faces", cfg.max_faces, "an integer >= 1")
    need(0 < cfg.min_detection_confidence <= 1, "--min-detection-confidence", cfg.min_detection_confidence,
         "a probability in (0, 1]")
    need(cfg.focal is None or cfg.focal > 0, "--focal", cfg.focal, "a focal length in pixels > 0")
    need(cfg.pose_smooth_sigma >= 0, "--pose-smooth-sigma", cfg.pose_smooth_sigma, "frames >= 0")
    need(0 < cfg.blink_closed_ratio < 1, "--blink-closed-ratio", cfg.blink_closed_ratio, "a ratio in (0, 1)")
    need(cfg.min_seconds >= 0, "--min-seconds", cfg.min_seconds, "seconds >= 0")
    need(cfg.long_loss_s >= 0, "--long-loss-s", cfg.long_loss_s, "seconds >= 0")
    need(cfg.max_av_offset_s >= 0, "--max-av-offset-s", cfg.max_av_offset_s, "seconds >= 0")
    need(0 <= cfg.holdout_fraction < 1, "--holdout-fraction", cfg.holdout_fraction, "a fraction in [0, 1)")
    need(0 <= cfg.png_compression <= 9, "--png-compression", cfg.png_compression, "a level in 0..9")
    need(1 <= cfg.jpeg_quality <= 100, "--jpeg-quality", cfg.jpeg_quality, "a quality in 1..100")
    need(0 < cfg.seg_threshold < 1, "--seg-threshold", cfg.seg_threshold, "a probability in (0, 1)")
    need(cfg.background_frames >= 1, "--background-frames", cfg.background_frames, "an integer >= 1")
    need(1 <= cfg.threads <= 256, "--threads", cfg.threads, "an integer in 1..256")
    if cfg.known_landmarks is not None and not Path(cfg.known_landmarks).is_file():
        raise CaptureError(f"--known-landmarks {cfg.known_landmarks}: file not found (expected a ground_truth.npz)")
