"""Working frames of one camera stream, on disk (never all in memory).

Formats: "raw" (one file of fixed-size uint8 RGB frames, read back with a positioned read: no
decode, no memory map growing the process), "jpg" (quality 97, 4:4:4) or "png" (lossless), one file
per frame. "auto" picks raw when the whole stream fits in `raw_max_bytes`, else jpg.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Tuple

import numpy as np

from .errors import CaptureError


def choose_format(fmt: str, size: Tuple[int, int], est_frames: float, raw_max_bytes: float) -> str:
    if fmt != "auto":
        return fmt
    return "raw" if size[0] * size[1] * 3 * est_frames <= raw_max_bytes else "jpg"


class FrameStore:
    """frames of size (w, h) in `folder` with format fmt ("raw" | "jpg" | "png")."""

    def __init__(self, folder: Path, fmt: str, size: Tuple[int, int]):
        if fmt not in ("raw", "jpg", "png"):
            raise ValueError(f"FrameStore: format must be raw, jpg or png, got {fmt!r}")
        self.folder = Path(folder)
        self.fmt = fmt
        self.w, self.h = int(size[0]), int(size[1])
        self._nbytes = self.w * self.h * 3

    def _path(self, n: int) -> Path:
        return self.folder / f"{n:06d}.{self.fmt}"

    @property
    def _raw(self) -> Path:
        return self.folder / "frames.rgb"

    def read(self, n: int) -> np.ndarray:
        """Frame n as uint8 [h, w, 3] RGB."""
        if self.fmt == "raw":
            try:
                with open(self._raw, "rb") as f:
                    buf = os.pread(f.fileno(), self._nbytes, int(n) * self._nbytes)
            except OSError as e:
                raise CaptureError(f"{self._raw}: unreadable working frames ({e}); rerun with --from frames") from None
            if len(buf) != self._nbytes:
                raise CaptureError(f"{self._raw}: frame {n} missing (rerun with --from frames)")
            return np.frombuffer(buf, np.uint8).reshape(self.h, self.w, 3)
        import cv2

        img = cv2.imread(str(self._path(n)), cv2.IMREAD_COLOR)
        if img is None:
            raise CaptureError(f"{self._path(n)}: missing/unreadable working frame (rerun with --from frames)")
        return np.ascontiguousarray(img[..., ::-1])

    def writer(self, threads: int = 2) -> "_Writer":
        self.folder.mkdir(parents=True, exist_ok=True)
        return _Writer(self, threads)


class _Writer:
    """Appends frames in order (raw: one sequential file; jpg/png: encoded on a thread pool)."""

    def __init__(self, store: FrameStore, threads: int):
        self.store = store
        self.count = 0
        self._file = open(store._raw, "wb") if store.fmt == "raw" else None
        self._pool = ThreadPoolExecutor(max(1, threads)) if store.fmt != "raw" else None
        self._futs: List = []

    def append(self, img: np.ndarray) -> None:
        s = self.store
        if img.shape != (s.h, s.w, 3) or img.dtype != np.uint8:
            raise ValueError(f"FrameStore: expected uint8 {(s.h, s.w, 3)}, got {img.dtype} {img.shape}")
        if self._file is not None:
            self._file.write(np.ascontiguousarray(img).data)
        else:
            from avatar.io.atomic import atomic_write_bytes
            from avatar.data.writer import encode_image

            path = s._path(self.count)
            self._futs.append(self._pool.submit(
                lambda p=path, im=img: atomic_write_bytes(p, encode_image(im, s.fmt, 1, 97))))
            if len(self._futs) > 16:
                self._futs.pop(0).result()
        self.count += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._pool is not None:
            for f in self._futs:
                f.result()
            self._pool.shutdown()

    def __enter__(self) -> "_Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
