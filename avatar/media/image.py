"""Image files: one atomic writer for PNG/JPEG previews, sheets and frames.

Images are float32 [0, 1] or uint8, HxW (grey), HxWx3 (RGB) or HxWx4 (RGBA) at the boundary;
OpenCV's BGR order stays inside this module.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from avatar.io.atomic import atomic_write_bytes


def to_uint8(img: np.ndarray) -> np.ndarray:
    """float [0, 1] (clipped) or uint8 -> uint8, same shape."""
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img
    if not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"image must be uint8 or float in [0, 1], got dtype {img.dtype}")
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_image(path, img: np.ndarray, png_compression: int = 3, jpeg_quality: int = 95) -> Path:
    """Write an RGB/RGBA/grey image atomically (tmp file + rename); format from the suffix."""
    import cv2

    path = Path(path)
    img = to_uint8(img)
    if img.ndim == 3 and img.shape[2] == 3:
        img = img[..., ::-1]
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[..., [2, 1, 0, 3]]
    elif img.ndim != 2:
        raise ValueError(f"save_image({path}): expected HxW, HxWx3 or HxWx4, got shape {img.shape}")
    ext = path.suffix.lower()
    params = {".png": [cv2.IMWRITE_PNG_COMPRESSION, png_compression],
              ".jpg": [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality],
              ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]}.get(ext)
    if params is None:
        raise ValueError(f"save_image({path}): unsupported suffix {ext!r}; use .png or .jpg")
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(img), params)
    if not ok:
        raise ValueError(f"save_image({path}): OpenCV could not encode the image")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.tobytes())
    return path
