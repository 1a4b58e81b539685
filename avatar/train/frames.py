"""Training/evaluation view of a capture: frames resized once into memory, per-frame regions and audio.

Reads the capture only through the `avatar.data` dataset object (or any object with the same
attributes, e.g. the fakes in the tests). Images are kept as uint8 (a 300-frame 128² capture is ~15 MB).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from avatar.data.schema import LABELS
from avatar.train.config import DataConfig, LossConfig
from avatar.audio.features import AudioFeatureConfig, feature_windows, frame_features

LIPS_OUTER_FALLBACK = None


@dataclass
class FrameData:
    """Tensors of all frames at training resolution (h, w)."""

    width: int
    height: int
    images: torch.Tensor       # [F,h,w,3] uint8
    masks: torch.Tensor        # [F,h,w] uint8 labels
    lips: torch.Tensor         # [F,h,w] bool lip region
    mouth_boxes: np.ndarray    # [F,4] int (x0, y0, x1, y1) mouth region for metrics
    viewmats: torch.Tensor     # [F,4,4]
    Ks: torch.Tensor           # [F,3,3] at (w, h)
    audio: torch.Tensor        # [F,2k+1,D] audio feature windows
    motion: Optional[torch.Tensor]  # [F,M] or None
    blink: torch.Tensor        # [F]
    mouth_open: np.ndarray     # [F] (tracks, nan if absent)
    background: torch.Tensor   # [h,w,3] float
    train_idx: np.ndarray
    test_idx: np.ndarray
    fps: float
    crop: Optional[tuple] = None  # (x0, y0, side) face window in stored pixels (DataConfig.crop), or None

    def image(self, i: int) -> torch.Tensor:  # [h,w,3] float
        return self.images[i].float() / 255.0


def _resize(img: np.ndarray, w: int, h: int, nearest: bool = False) -> np.ndarray:
    import cv2

    if img.shape[1] == w and img.shape[0] == h:
        return img
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def _lips_outer() -> np.ndarray:
    from avatar.data.face_model import LIPS_OUTER

    return LIPS_OUTER


def face_window(lm2d: np.ndarray, idx: np.ndarray, crop: float, W: int, H: int) -> tuple:
    """(x0, y0, side) in stored pixels: a square of side crop x the median landmark extent, centred on the
    median landmark centre, shifted to lie inside the W x H image (side at most min(W, H))."""
    pts = np.asarray(lm2d, np.float64)[np.asarray(idx)]  # [T, L, 2]
    ok = np.isfinite(pts).all((1, 2))
    if not ok.any():
        return 0, 0, min(W, H)
    pts = pts[ok]
    lo, hi = pts.min(1), pts.max(1)  # [T, 2]
    centre = np.median((lo + hi) / 2, 0)
    size = float(np.median((hi - lo).max(1)))
    side = int(round(min(max(crop * size, 8.0), W, H)))
    x0 = int(round(np.clip(centre[0] - side / 2, 0, W - side)))
    y0 = int(round(np.clip(centre[1] - side / 2, 0, H - side)))
    return x0, y0, side


def load_frames(ds, data_cfg: DataConfig, loss_cfg: LossConfig, audio_cfg: AudioFeatureConfig, window: int,
                use_motion: bool, motion: Optional[np.ndarray] = None) -> FrameData:
    """Resize and cache every frame of `ds` (avatar.data dataset API). motion [F, M]: the motion
    input to use instead of the tracked codes (e.g. avatar.prior.api.motion_for_training)."""
    import cv2

    W, H = int(ds.width), int(ds.height)
    tracks = ds.tracks or {}
    split = ds.split
    x0c, y0c, face_box = 0, 0, None
    if data_cfg.crop > 0 and tracks.get("landmarks2d") is not None:
        face_box = face_window(tracks["landmarks2d"], np.union1d(split["train"], split["test"]), data_cfg.crop, W, H)
        x0c, y0c, W = face_box
        H = W

    def cut(img: np.ndarray) -> np.ndarray:  # [H0, W0, ...] -> the face window [H, W, ...]
        return img[y0c:y0c + H, x0c:x0c + W]
    s = 1.0
    if data_cfg.max_size and max(W, H) > data_cfg.max_size:
        s = data_cfg.max_size / max(W, H)
    w, h = max(8, int(round(W * s))), max(8, int(round(H * s)))
    sx, sy = w / W, h / H
    F = int(ds.num_frames)
    train_idx = np.asarray(split["train"], np.int64)
    test_idx = np.asarray(split["test"], np.int64)
    if data_cfg.max_frames and len(train_idx) > data_cfg.max_frames:
        train_idx = train_idx[np.linspace(0, len(train_idx) - 1, data_cfg.max_frames).round().astype(int)]
    used = np.union1d(train_idx, test_idx)
    images = torch.zeros(F, h, w, 3, dtype=torch.uint8)
    masks = torch.zeros(F, h, w, dtype=torch.uint8)
    for i in used:
        img = _resize(cut(np.asarray(ds.image(int(i)), np.float32)), w, h)
        images[i] = torch.from_numpy(np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8))
        masks[i] = torch.from_numpy(_resize(np.ascontiguousarray(cut(np.asarray(ds.mask(int(i)), np.uint8))),
                                            w, h, nearest=True))
    Ks = torch.as_tensor(np.asarray(ds.Ks, np.float32)).clone()
    Ks[:, 0, 2] -= x0c  # the crop moves the principal point (pixel centres stay at +0.5)
    Ks[:, 1, 2] -= y0c
    Ks[:, 0, :] *= sx
    Ks[:, 1, :] *= sy
    viewmats = torch.as_tensor(np.asarray(ds.viewmats, np.float32))
    lips = torch.zeros(F, h, w, dtype=torch.bool)
    boxes = np.zeros((F, 4), np.int64)
    lm2d = tracks.get("landmarks2d")
    lip_ids = _lips_outer()
    for i in range(F):
        if lm2d is not None:
            pts = (np.asarray(lm2d[i], np.float64)[lip_ids] - np.array([x0c, y0c])) * np.array([sx, sy])
            x0, y0 = pts.min(0)
            x1, y1 = pts.max(0)
            mw = max(x1 - x0, 1.0)
            d = int(round(loss_cfg.lip_dilate_px * mw))
            m = np.zeros((h, w), np.uint8)
            cv2.fillPoly(m, [np.round(pts - 0.5).astype(np.int32)], 1)
            if d > 0:
                m = cv2.dilate(m, np.ones((2 * d + 1, 2 * d + 1), np.uint8))
            lips[i] = torch.from_numpy(m > 0)
            pad = 0.25 * mw
            boxes[i] = [max(0, int(x0 - pad)), max(0, int(y0 - pad)), min(w, int(np.ceil(x1 + pad))),
                        min(h, int(np.ceil(y1 + pad)))]
        else:  # no landmarks: mouth-interior mask bbox, else lower-middle of the frame
            ys, xs = np.nonzero(masks[i].numpy() == LABELS["mouth"])
            if len(xs):
                boxes[i] = [max(0, xs.min() - 2), max(0, ys.min() - 2), min(w, xs.max() + 3), min(h, ys.max() + 3)]
            else:
                boxes[i] = [w // 3, h // 2, 2 * w // 3, 3 * h // 4]
    # audio: features on the dataset frame timeline, indexed by each frame's time
    times = np.asarray(getattr(ds, "frame_times", np.arange(F)), np.int64)
    n_t = int(times.max()) + 1 if len(times) else F
    if ds.audio is not None and len(ds.audio) > 0:
        feats = frame_features(np.asarray(ds.audio, np.float32), float(ds.fps), n_t, audio_cfg)
    else:
        feats = torch.zeros(n_t, audio_cfg.n_mels if audio_cfg.kind == "mel" else audio_cfg.dim)
    windows = feature_windows(feats, window)[torch.from_numpy(times)]
    if motion is not None:
        motion = torch.as_tensor(np.asarray(motion, np.float32))  # [F, M]
        if motion.ndim != 2 or motion.shape[0] != F:
            raise ValueError(f"load_frames: motion must be [F={F}, M], got {tuple(motion.shape)}")
        if not use_motion:
            motion = None
    elif use_motion and tracks.get("motion") is not None:
        motion = torch.as_tensor(np.asarray(tracks["motion"], np.float32))
    blink = torch.as_tensor(np.asarray(tracks.get("blink", np.zeros(F)), np.float32))
    mouth_open = np.asarray(tracks.get("mouth_open", np.full(F, np.nan)), np.float64)
    bg = torch.from_numpy(_resize(np.ascontiguousarray(cut(np.asarray(ds.background, np.float32))), w, h).copy())
    if data_cfg.background == "white":
        bg = torch.ones_like(bg)
    elif data_cfg.background == "black":
        bg = torch.zeros_like(bg)
    return FrameData(w, h, images, masks, lips, boxes, viewmats, Ks, windows, motion, blink, mouth_open, bg,
                     train_idx, test_idx, float(ds.fps), crop=face_box)
