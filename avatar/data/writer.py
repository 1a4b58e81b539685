"""CaptureWriter: the one writer of a capture folder (used by the capture pipeline's write stage).

Images and masks are encoded on a small thread pool (OpenCV releases the GIL) and every file is
written atomically (avatar.io.atomic). transforms.json is written last by `close()`, so a folder
without it is an unfinished capture and `load_capture` refuses it.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import schema
from .cameras import opengl_c2w_from_viewmat, rigid_inverse
from avatar.media.audio import save_wav
from avatar.media.timeline import SAMPLE_RATE
from avatar.io.atomic import atomic_path, atomic_write_bytes, atomic_write_json
from avatar.io.outdir import claim_dir


def _as_uint8(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img
    return (np.clip(img.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def encode_image(img_rgb: np.ndarray, ext: str, png_compression: int = 1, jpeg_quality: int = 95) -> bytes:
    """Encode an RGB uint8 [H, W, 3] (or float [0, 1]) or label uint8 [H, W] image to PNG/JPEG bytes."""
    import cv2

    img = _as_uint8(img_rgb)
    if img.ndim == 3:
        img = img[..., ::-1]  # RGB -> BGR for OpenCV
    if ext == "png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, int(png_compression)]
    elif ext in ("jpg", "jpeg"):
        # 4:4:4 chroma: at quality 95 a 512x512 face frame is ~50 dB PSNR from lossless, 1 ms to encode
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality), cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                  cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    else:
        raise ValueError(f"encode_image: ext must be 'png' or 'jpg', got {ext!r}")
    ok, buf = cv2.imencode("." + ext, np.ascontiguousarray(img), params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {img.shape} image as {ext}")
    return buf.tobytes()


class CaptureWriter:
    """Write a capture folder frame by frame.

        with CaptureWriter(out, fps=25.0) as w:
            for ...: w.add_frame(image, mask, K, head_pose, time=t, camera_id=0)
            w.write_background(bg); w.write_audio(wav); w.write_tracks(...)
            w.set_split(train_idx, test_idx)
        # transforms.json is written on a clean exit (close())
    """

    def __init__(self, root, *, fps: float, image_ext: str = "png", png_compression: int = 1,
                 jpeg_quality: int = 95, num_threads: int = 2, clean: bool = True, owned=None):
        if image_ext not in ("png", "jpg"):
            raise ValueError(f"CaptureWriter: image_ext must be 'png' or 'jpg', got {image_ext!r}")
        if not fps > 0:
            raise ValueError(f"CaptureWriter: fps must be > 0, got {fps}")
        self.root = Path(root)
        self.fps = float(fps)
        self.image_ext = image_ext
        self.png_compression = png_compression
        self.jpeg_quality = jpeg_quality
        # the folder must be ours (avatar.io.outdir): new, empty, or made by avatar capture; only files
        # listed in its manifest are ever replaced or removed (a user's own files there stay)
        self.owned = owned if owned is not None else claim_dir(self.root, "capture")
        self.owned.add(schema.TRANSFORMS, schema.AUDIO, schema.TRACKS, schema.BACKGROUND)
        tj = self.root / schema.TRANSFORMS
        if tj.exists():
            tj.unlink()  # the folder is being rewritten: unfinished until close()
        if clean:
            for d in (schema.IMAGES_DIR, schema.MASKS_DIR):
                self.owned.remove_owned(d + "/")
            for f in (schema.AUDIO, schema.TRACKS, schema.BACKGROUND):
                if (self.root / f).exists():
                    (self.root / f).unlink()
        for d in (schema.IMAGES_DIR, schema.MASKS_DIR):
            (self.root / d).mkdir(exist_ok=True)
        self._listed = 0  # frames whose file names are already in the manifest (written ahead)
        self._pool = ThreadPoolExecutor(max(1, num_threads))
        self._futures: List = []
        self._frames: List[Dict] = []
        self._size: Optional[tuple] = None
        self._has_audio = False
        self._has_tracks = False
        self._has_background = False
        self._split: Optional[Dict[str, List[int]]] = None
        self._closed = False

    # -- per-frame -----------------------------------------------------------------------------
    def add_frame(self, image: np.ndarray, mask: np.ndarray, K: np.ndarray, head_pose: np.ndarray,
                  time: int, camera_id: int = 0) -> int:
        """Queue one frame. image [H, W, 3] RGB uint8 (or float [0, 1]); mask [H, W] uint8 labels;
        K [3, 3] pixels of the stored image; head_pose [4, 4] camera-to-head (OpenCV); time = frame
        index on the dataset fps timeline. Returns the frame's index in the dataset."""
        image = np.asarray(image)
        mask = np.asarray(mask)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"add_frame: image must be [H, W, 3], got {image.shape}")
        if mask.shape != image.shape[:2] or mask.dtype != np.uint8:
            raise ValueError(f"add_frame: mask must be uint8 {image.shape[:2]}, got {mask.dtype} {mask.shape}")
        if mask.size and int(mask.max()) > max(schema.LABELS.values()):
            raise ValueError(f"add_frame: mask has label {int(mask.max())}, labels are {schema.LABELS}")
        h, w = image.shape[:2]
        if self._size is None:
            self._size = (w, h)
        elif self._size != (w, h):
            raise ValueError(f"add_frame: all frames must have one size {self._size}, got {(w, h)}")
        i = len(self._frames)
        name = f"{i:06d}"
        img_rel = f"{schema.IMAGES_DIR}/{name}.{self.image_ext}"
        mask_rel = f"{schema.MASKS_DIR}/{name}.png"
        if i >= self._listed:  # list the next 256 frames' files before any of them exists
            ahead = range(i, i + 256)
            self.owned.add(*[f"{schema.IMAGES_DIR}/{k:06d}.{self.image_ext}" for k in ahead],
                           *[f"{schema.MASKS_DIR}/{k:06d}.png" for k in ahead])
            self._listed = i + 256
        self._futures.append(self._pool.submit(self._write_image, self.root / img_rel, image, self.image_ext))
        self._futures.append(self._pool.submit(self._write_image, self.root / mask_rel, mask, "png"))
        K = np.asarray(K, np.float64)
        pose = np.asarray(head_pose, np.float64)
        if K.shape != (3, 3) or pose.shape != (4, 4) or not np.isfinite(pose).all():
            raise ValueError(f"add_frame: K must be [3, 3] and head_pose a finite [4, 4], got {K.shape} {pose.shape}")
        c2w_gl = opengl_c2w_from_viewmat(rigid_inverse(pose))
        self._frames.append({
            "file_path": img_rel,
            "mask_path": mask_rel,
            "transform_matrix": [[float(v) for v in row] for row in c2w_gl],
            "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]),
            "w": int(w), "h": int(h),
            "time": int(time),
            "camera_id": int(camera_id),
        })
        if len(self._futures) > 64:  # bound the queue (memory): wait for the oldest
            self._drain(keep=32)
        return i

    def _write_image(self, path: Path, img: np.ndarray, ext: str) -> None:
        atomic_write_bytes(path, encode_image(img, ext, self.png_compression, self.jpeg_quality))

    def _drain(self, keep: int = 0) -> None:
        while len(self._futures) > keep:
            self._futures.pop(0).result()

    # -- whole-capture files -------------------------------------------------------------------
    def write_background(self, image: np.ndarray) -> None:
        """Background plate [H, W, 3] RGB at the stored size."""
        self._write_image(self.root / schema.BACKGROUND, np.asarray(image), "png")
        self._has_background = True

    def write_audio(self, wav: np.ndarray, sr: int = SAMPLE_RATE) -> None:
        """Mono float32 [S] at 16 kHz (the dataset's audio timeline starts at frame time 0)."""
        if sr != SAMPLE_RATE:
            raise ValueError(f"write_audio: audio must be {SAMPLE_RATE} Hz mono, got {sr} Hz")
        save_wav(self.root / schema.AUDIO, np.asarray(wav, np.float32).reshape(-1), sr)
        self._has_audio = True

    def write_tracks(self, **tracks: np.ndarray) -> None:
        """tracks.npz: the arrays of schema.TRACK_SHAPES (all with F = number of frames) plus extras
        (e.g. neutral [478, 3])."""
        missing = [k for k in schema.TRACK_SHAPES if k not in tracks]
        if missing:
            raise ValueError(f"write_tracks: missing arrays {missing}")
        arrays = {k: np.asarray(v) for k, v in tracks.items()}
        for k in schema.TRACK_SHAPES:
            arrays[k] = arrays[k].astype(np.float32)
        with atomic_path(self.root / schema.TRACKS, suffix=".npz") as tmp:
            np.savez(tmp, **arrays)
        self._has_tracks = True
        self._num_track_frames = int(arrays["landmarks2d"].shape[0])

    def set_split(self, train: Sequence[int], test: Sequence[int]) -> None:
        self._split = {"train": [int(i) for i in train], "test": [int(i) for i in test]}

    # -- finish --------------------------------------------------------------------------------
    def close(self, *, motion_space: Optional[Dict] = None, cameras: Optional[List[Dict]] = None,
              extra: Optional[Dict] = None) -> Path:
        """Finish all image writes and write transforms.json (last, atomically). Returns its path."""
        if self._closed:
            return self.root / schema.TRANSFORMS
        self._drain()
        self._pool.shutdown(wait=True)
        n = len(self._frames)
        if n == 0:
            raise ValueError("CaptureWriter.close: no frames were added")
        if not self._has_tracks or self._num_track_frames != n:
            raise ValueError(f"CaptureWriter.close: tracks.npz must be written with {n} frames first")
        if not self._has_background:
            raise ValueError("CaptureWriter.close: background.png must be written first")
        split = self._split or default_split(n)
        w, h = self._size
        out: Dict = {"camera_model": "OPENCV", "w": w, "h": h}
        Ks = {(f["fl_x"], f["fl_y"], f["cx"], f["cy"]) for f in self._frames}
        if len(Ks) == 1:
            fx, fy, cx, cy = next(iter(Ks))
            out.update({"fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy})
        out["frames"] = self._frames
        avatar = {
            "version": schema.SCHEMA_VERSION,
            "fps": self.fps,
            "num_frames": n,
            "audio": schema.AUDIO if self._has_audio else None,
            "audio_sr": SAMPLE_RATE,
            "tracks": schema.TRACKS,
            "background": schema.BACKGROUND,
            "labels": dict(schema.LABELS),
            "split": split,
            "cameras": cameras or [{"id": 0, "name": "cam0"}],
            "world": "head frame (OpenCV axes, metres); transform_matrix is camera-to-head in OpenGL axes",
        }
        if motion_space is not None:
            avatar["motion_space"] = motion_space
        if extra:
            avatar.update(extra)
        out["avatar"] = avatar
        unused = {f"{d}/{k:06d}.{e}" for k in range(n, self._listed)
                  for d, e in ((schema.IMAGES_DIR, self.image_ext), (schema.MASKS_DIR, "png"))}
        if unused & self.owned.files:  # names listed ahead for frames that never came
            self.owned.files -= unused
            self.owned.save()
        path = self.root / schema.TRANSFORMS
        atomic_write_json(path, out)
        self._closed = True
        return path

    def __enter__(self) -> "CaptureWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._pool.shutdown(wait=True, cancel_futures=True)


def default_split(n: int, holdout_fraction: float = 1.0 / 11.0) -> Dict[str, List[int]]:
    """The field's protocol: the last `holdout_fraction` of frames (at least 1 when n >= 2) is the test set."""
    n_test = int(round(n * holdout_fraction))
    if n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    else:
        n_test = 0
    return {"train": list(range(n - n_test)), "test": list(range(n - n_test, n))}
