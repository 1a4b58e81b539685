"""load_capture: the one reader of a capture folder (see schema.py for the layout).

Everything small (cameras, tracks, split) is read and checked at load time; images, masks, the
background and the audio are read lazily on first use. A missing or inconsistent file raises
DatasetError naming the file and the capture stage that makes it.
"""
from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Dict, List, Optional, Protocol

import numpy as np

from avatar.media.timeline import SAMPLE_RATE, frame_sample

from . import schema
from .cameras import viewmat_from_opengl_c2w
from .schema import DatasetError
from .wavio import read_wav


def _stage_of(rel: str) -> str:
    return schema.STAGE_OF.get(rel.split("/")[0], "write")


class Capture(Protocol):
    """What every consumer of a capture needs (train, drive, serve, eval, the prior's data): a loaded
    capture is passed down as this, never re-read from its path. `CaptureDataset` implements it, and so
    do the in-memory test fakes (tests/test_train_fakes.py)."""

    num_frames: int
    fps: float
    width: int
    height: int
    Ks: np.ndarray  # float32 [F, 3, 3]
    viewmats: np.ndarray  # float32 [F, 4, 4] world-to-camera, OpenCV axes
    tracks: Dict[str, np.ndarray]
    split: Dict[str, np.ndarray]

    @property
    def background(self) -> np.ndarray: ...  # float32 [H, W, 3]

    @property
    def audio(self) -> Optional[np.ndarray]: ...  # float32 [S] at 16 kHz, or None

    def image(self, i: int) -> np.ndarray: ...  # float32 [H, W, 3] in [0, 1]

    def mask(self, i: int) -> np.ndarray: ...  # uint8 [H, W] labels (schema.LABELS)


class CaptureDataset:
    """A capture folder. Attributes (F frames, stored image size width x height):

    num_frames, fps, width, height
    Ks          float32 [F, 3, 3]  pixels of the stored image
    viewmats    float32 [F, 4, 4]  world(head)-to-camera, OpenCV axes
    camera_ids  int32   [F]
    frame_times int64   [F]        frame index on the dataset fps timeline (audio sample = frame_sample(t, fps))
    tracks      dict of arrays (schema.TRACK_SHAPES; plus "neutral" [478, 3] when present)
    split       {"train": int64 idx, "test": int64 idx}
    motion_space  avatar.data.motion.MotionSpace or None
    image(i) -> float32 [H, W, 3] in [0, 1];  image_uint8(i) -> uint8 [H, W, 3]
    mask(i)  -> uint8 [H, W] labels (schema.LABELS)
    background -> float32 [H, W, 3];  audio -> float32 [S] at 16 kHz or None
    """

    def __init__(self, root):
        self.root = Path(root)
        tj = self.root / schema.TRANSFORMS
        if not self.root.is_dir():
            what = "is a file" if self.root.exists() else "does not exist"
            raise DatasetError(f"{what}; expected a capture folder written by `avatar capture VIDEO --out "
                               f"FOLDER`", self.root)
        if not tj.is_file():
            if any((self.root / n).exists() for n in (".capture", ".avatar-output.json", schema.IMAGES_DIR)):
                raise DatasetError(f"missing (the capture stage 'write' writes it last): {self.root} is an "
                                   f"unfinished (interrupted or failed) capture; rerun the same `avatar capture "
                                   f"... --out {self.root}` command to finish it", tj)
            raise DatasetError(f"missing: {self.root} is not a capture folder (expected one written by "
                               f"`avatar capture VIDEO --out FOLDER`)", tj)
        try:
            meta = json.loads(tj.read_text())
        except (OSError, ValueError) as e:
            raise DatasetError(f"unreadable JSON ({e})", tj, "write") from None
        av = meta.get("avatar")
        if not isinstance(av, dict):
            raise DatasetError('no "avatar" block (not written by avatar capture?)', tj, "write")
        if av.get("version") != schema.SCHEMA_VERSION:
            raise DatasetError(f'"avatar.version" is {av.get("version")!r}, this code reads '
                               f"{schema.SCHEMA_VERSION}", tj, "write")
        frames: List[Dict] = meta.get("frames") or []
        if not frames:
            raise DatasetError('"frames" is empty', tj, "write")
        self.meta = meta
        self._avatar = av
        self.num_frames = len(frames)
        self.fps = float(av.get("fps", 0.0))
        if not self.fps > 0:
            raise DatasetError(f'"avatar.fps" must be > 0, got {av.get("fps")!r}', tj, "write")
        if int(av.get("num_frames", self.num_frames)) != self.num_frames:
            raise DatasetError(f'"avatar.num_frames" = {av.get("num_frames")} but there are '
                               f"{self.num_frames} frames", tj, "write")

        def field(f: Dict, k: str):
            v = f.get(k, meta.get(k))
            if v is None:
                raise DatasetError(f'frame {f.get("file_path")!r} has no "{k}" (per frame or global)', tj, "write")
            return v

        Ks = np.zeros((self.num_frames, 3, 3), np.float32)
        c2w = np.zeros((self.num_frames, 4, 4), np.float64)
        sizes = set()
        self._image_paths: List[Path] = []
        self._mask_paths: List[Optional[Path]] = []
        for i, f in enumerate(frames):
            Ks[i] = [[field(f, "fl_x"), 0, field(f, "cx")], [0, field(f, "fl_y"), field(f, "cy")], [0, 0, 1]]
            sizes.add((int(field(f, "w")), int(field(f, "h"))))
            try:
                c2w[i] = np.asarray(f["transform_matrix"], np.float64)
            except (KeyError, ValueError) as e:
                raise DatasetError(f"frame {i}: bad transform_matrix ({e})", tj, "write") from None
            self._image_paths.append(self.root / f["file_path"])
            self._mask_paths.append(self.root / f["mask_path"] if f.get("mask_path") else None)
        if len(sizes) != 1:
            raise DatasetError(f"frames have different sizes {sorted(sizes)}", tj, "write")
        self.width, self.height = sizes.pop()
        self.Ks = Ks
        self.viewmats = viewmat_from_opengl_c2w(c2w).astype(np.float32)
        self.camera_ids = np.array([int(f.get("camera_id", 0)) for f in frames], np.int32)
        self.frame_times = np.array([int(f.get("time", i)) for i, f in enumerate(frames)], np.int64)
        self.cameras = av.get("cameras", [{"id": 0, "name": "cam0"}])
        for kind, paths in (("image", self._image_paths), ("mask", self._mask_paths)):
            for p in paths:
                if p is None:
                    raise DatasetError('a frame has no "mask_path"', tj, "write")
                if not p.is_file():
                    rel = p.relative_to(self.root).as_posix()
                    raise DatasetError(f"{kind} listed in transforms.json is missing", p, _stage_of(rel))
        bg = self.root / av.get("background", schema.BACKGROUND)
        if not bg.is_file():
            raise DatasetError("missing", bg, "background")
        self._background_path = bg
        self._audio_path = self.root / av["audio"] if av.get("audio") else None
        if self._audio_path is not None and not self._audio_path.is_file():
            raise DatasetError("missing (transforms.json lists it)", self._audio_path, "audio")
        self.tracks = self._load_tracks(self.root / av.get("tracks", schema.TRACKS))
        self.split = self._load_split(av.get("split"), tj)
        self.motion_space = None
        if av.get("motion_space") is not None:
            from .motion import MotionSpace

            try:
                self.motion_space = MotionSpace.from_dict(av["motion_space"])
            except ValueError as e:
                raise DatasetError(f'"avatar.motion_space": {e}', tj, "tracking") from None

    def _load_tracks(self, path: Path) -> Dict[str, np.ndarray]:
        if not path.is_file():
            raise DatasetError("missing", path, "tracking")
        try:
            with np.load(path, allow_pickle=False) as z:
                tracks = {k: z[k] for k in z.files}
        except Exception as e:  # noqa: BLE001 - any read failure is a broken file
            raise DatasetError(f"unreadable ({e})", path, "tracking") from None
        F = self.num_frames
        for k, shape in schema.TRACK_SHAPES.items():
            if k not in tracks:
                raise DatasetError(f'has no array "{k}"', path, "tracking")
            a = tracks[k]
            want = tuple(F if s == "F" else s for s in shape)
            ok = a.ndim == len(want) and all(w is None or w == s for w, s in zip(want, a.shape))
            if not ok:
                raise DatasetError(f'"{k}" has shape {a.shape}, expected {want} (F = {F} frames in '
                                   f"transforms.json)", path, "tracking")
            if not np.isfinite(a).all():
                raise DatasetError(f'"{k}" has non-finite values', path, "tracking")
        return tracks

    def _load_split(self, split, tj: Path) -> Dict[str, np.ndarray]:
        if split is None:
            from .writer import default_split

            split = default_split(self.num_frames)
        out = {}
        for k in ("train", "test"):
            idx = np.asarray(split.get(k, []), np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= self.num_frames):
                raise DatasetError(f'"avatar.split.{k}" has indices outside [0, {self.num_frames})', tj, "split")
            out[k] = idx
        if np.intersect1d(out["train"], out["test"]).size:
            raise DatasetError('"avatar.split" train and test overlap', tj, "split")
        return out

    # -- lazy data -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.num_frames

    def _read(self, path: Path, flags: int, stage: str) -> np.ndarray:
        import cv2

        img = cv2.imread(str(path), flags)
        if img is None:
            raise DatasetError("unreadable image", path, stage)
        return img

    def image_uint8(self, i: int) -> np.ndarray:
        """Frame i as uint8 [H, W, 3] RGB."""
        import cv2

        p = self._image_paths[i]
        img = self._read(p, cv2.IMREAD_COLOR, "frames")
        if img.shape[:2] != (self.height, self.width):
            raise DatasetError(f"size {img.shape[1]}x{img.shape[0]}, transforms.json says "
                               f"{self.width}x{self.height}", p, "frames")
        return np.ascontiguousarray(img[..., ::-1])

    def image(self, i: int) -> np.ndarray:
        """Frame i as float32 [H, W, 3] in [0, 1] (RGB)."""
        return self.image_uint8(i).astype(np.float32) * (1.0 / 255.0)

    def mask(self, i: int) -> np.ndarray:
        """Label mask of frame i, uint8 [H, W] (schema.LABELS)."""
        import cv2

        p = self._mask_paths[i]
        m = self._read(p, cv2.IMREAD_UNCHANGED, "masks")
        if m.ndim != 2 or m.shape != (self.height, self.width) or m.dtype != np.uint8:
            raise DatasetError(f"expected a uint8 label PNG {self.width}x{self.height}, got "
                               f"{m.dtype} {m.shape}", p, "masks")
        return m

    @cached_property
    def background(self) -> np.ndarray:
        """Background plate float32 [H, W, 3] in [0, 1] (RGB)."""
        import cv2

        img = self._read(self._background_path, cv2.IMREAD_COLOR, "background")
        if img.shape[:2] != (self.height, self.width):
            raise DatasetError(f"size {img.shape[1]}x{img.shape[0]} differs from the frames "
                               f"{self.width}x{self.height}", self._background_path, "background")
        return img[..., ::-1].astype(np.float32) * (1.0 / 255.0)

    @cached_property
    def audio(self) -> Optional[np.ndarray]:
        """float32 [S] at 16 kHz mono, or None when captured without audio."""
        if self._audio_path is None:
            return None
        try:
            wav, sr = read_wav(self._audio_path)
        except Exception as e:  # noqa: BLE001
            raise DatasetError(f"unreadable wav ({e})", self._audio_path, "audio") from None
        if sr != SAMPLE_RATE:
            raise DatasetError(f"sample rate {sr} Hz, expected {SAMPLE_RATE}", self._audio_path, "audio")
        return wav

    @property
    def has_audio(self) -> bool:
        return self._audio_path is not None

    @property
    def image_paths(self) -> List[Path]:
        return list(self._image_paths)

    def audio_sample(self, i: int) -> int:
        """Index into `audio` of the start of frame i."""
        return frame_sample(int(self.frame_times[i]), self.fps)

    def __repr__(self) -> str:
        return (f"CaptureDataset({str(self.root)!r}, frames={self.num_frames}, {self.width}x{self.height}, "
                f"fps={self.fps}, cameras={len(set(self.camera_ids.tolist()))}, audio={self.has_audio})")


def load_capture(path) -> CaptureDataset:
    """Open a capture folder written by `avatar capture` (raises DatasetError naming the file and stage)."""
    return CaptureDataset(path)
