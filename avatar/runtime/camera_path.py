"""Where the camera is, per video frame: head-pose sources for driving an avatar.

The avatar's head is fixed in its own ("world") frame, so head motion is camera motion: a pose
source gives, for each output frame index, a `Camera` (world-to-camera viewmat, OpenCV axes, plus
pinhole intrinsics and image size). Three sources:

* `FixedPose`: one camera for every frame (default: frontal, `frontal_camera`).
* `ClipPose`: the cameras of a training clip, looped without a jump: "pingpong" (forward then
  backward, positions continuous) or "crossfade" (the clip's last `crossfade` frames blend into
  its first ones, rotation by slerp, translation linearly).
* `PathPose`: keyframes from a camera-path JSON file (format in `load_camera_path`), interpolated
  the same way; validated with errors that name the file and the field.

numpy only (no torch), so importing this is cheap.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Literal, Optional, Protocol

import numpy as np

from avatar.data.cameras import look_at, quat_to_rotmat, rotmat_to_quat, slerp


class CameraPathError(ValueError):
    """A camera path or pose source that cannot work (names the file/field and what was expected)."""


@dataclass
class Camera:
    """One pinhole camera: what the renderer needs for a frame."""

    viewmat: np.ndarray  # [4, 4] float32 world(head)-to-camera, OpenCV axes
    K: np.ndarray  # [3, 3] float32 pixels (pixel (i, j) centre at x = j + 0.5, y = i + 0.5)
    width: int
    height: int

    def resized(self, width: int, height: int) -> "Camera":
        """The same view at another image size (intrinsics scaled per axis)."""
        K = self.K.astype(np.float64).copy()
        K[0] *= width / self.width
        K[1] *= height / self.height
        K[2] = (0.0, 0.0, 1.0)
        return Camera(self.viewmat.astype(np.float32), K.astype(np.float32), int(width), int(height))


class PoseSource(Protocol):
    """Camera for output frame `index` (any index >= 0: sources loop or hold)."""

    def camera(self, index: int) -> Camera: ...


def frontal_camera(width: int = 256, height: int = 256, distance: float = 0.6,
                   fov_y_deg: float = 30.0) -> Camera:
    """A camera `distance` metres in front of the face looking at the head centre (docs/architecture.md: the
    frontal viewmat is [[I, (0, 0, d)], [0, 0, 0, 1]]); square pixels, principal point centred."""
    if width < 1 or height < 1:
        raise CameraPathError(f"camera size must be >= 1 pixel, got {width}x{height}")
    if distance <= 0:
        raise CameraPathError(f"camera distance must be > 0 metres, got {distance}")
    f = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2)
    V = np.eye(4, dtype=np.float32)
    V[2, 3] = distance
    K = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], np.float32)
    return Camera(V, K, int(width), int(height))


def blend_viewmats(V0: np.ndarray, V1: np.ndarray, w: float) -> np.ndarray:
    """Pose between two world-to-camera matrices: camera centre linearly, orientation by slerp."""
    V0 = np.asarray(V0, np.float64)
    V1 = np.asarray(V1, np.float64)
    c0 = -V0[:3, :3].T @ V0[:3, 3]
    c1 = -V1[:3, :3].T @ V1[:3, 3]
    R = quat_to_rotmat(slerp(rotmat_to_quat(V0[:3, :3]), rotmat_to_quat(V1[:3, :3]), w))
    c = (1 - w) * c0 + w * c1
    out = np.eye(4)
    out[:3, :3] = R
    out[:3, 3] = -R @ c
    return out


# ----------------------------------------------------------------------------- pose sources
class FixedPose:
    """The same camera for every frame."""

    def __init__(self, camera: Camera):
        self._camera = camera

    def camera(self, index: int) -> Camera:
        return self._camera


def loop_index(i: int, n: int, mode: Literal["pingpong", "repeat", "hold"]) -> int:
    """Index into n items for an unbounded frame index i."""
    if n <= 1 or i <= 0:
        return 0
    if mode == "hold":
        return min(i, n - 1)
    if mode == "repeat":
        return i % n
    period = 2 * (n - 1)
    j = i % period
    return j if j < n else period - j


class ClipPose:
    """Cameras of a clip (e.g. the training capture), looped without a jump."""

    def __init__(self, viewmats: np.ndarray, Ks: np.ndarray, width: int, height: int,
                 mode: Literal["pingpong", "crossfade"] = "pingpong", crossfade: int = 12):
        viewmats = np.asarray(viewmats, np.float64)  # [F, 4, 4]
        Ks = np.asarray(Ks, np.float64)  # [F, 3, 3] or [3, 3]
        if viewmats.ndim != 3 or viewmats.shape[1:] != (4, 4) or len(viewmats) == 0:
            raise CameraPathError(f"ClipPose: viewmats must be [F, 4, 4] with F >= 1, got {viewmats.shape}")
        if Ks.shape == (3, 3):
            Ks = np.broadcast_to(Ks, (len(viewmats), 3, 3))
        if Ks.shape != (len(viewmats), 3, 3):
            raise CameraPathError(f"ClipPose: Ks must be [3, 3] or [{len(viewmats)}, 3, 3], got {Ks.shape}")
        if mode not in ("pingpong", "crossfade"):
            raise CameraPathError(f"ClipPose: mode must be 'pingpong' or 'crossfade', got {mode!r}")
        F = len(viewmats)
        if mode == "crossfade" and not 1 <= crossfade <= F // 2:
            raise CameraPathError(f"ClipPose: crossfade must be in [1, F/2 = {F // 2}] frames, got {crossfade}")
        self.viewmats, self.Ks, self.width, self.height = viewmats, Ks, int(width), int(height)
        self.mode, self.crossfade = mode, int(crossfade)

    def camera(self, index: int) -> Camera:
        F = len(self.viewmats)
        if self.mode == "pingpong":
            j = loop_index(index, F, "pingpong")
            V, K = self.viewmats[j], self.Ks[j]
        else:
            n = self.crossfade
            L = F - n  # loop length: frames L..F-1 fade into frames 0..n-1
            q = index % L
            if q < n:
                w = q / n
                V = blend_viewmats(self.viewmats[L + q], self.viewmats[q], w)
                K = (1 - w) * self.Ks[L + q] + w * self.Ks[q]
            else:
                V, K = self.viewmats[q], self.Ks[q]
        return Camera(np.asarray(V, np.float32), np.asarray(K, np.float32), self.width, self.height)


@dataclass
class _Key:
    time: float
    viewmat: np.ndarray  # [4, 4]


class PathPose:
    """Keyframed camera path (see `load_camera_path` for the file format)."""

    def __init__(self, keys: List[_Key], K: np.ndarray, width: int, height: int, fps: float,
                 loop: Literal["hold", "repeat", "pingpong"] = "hold"):
        self.keys, self.K, self.width, self.height = keys, np.asarray(K, np.float32), width, height
        self.fps, self.loop = float(fps), loop

    def _time(self, index: int) -> float:
        t = index / self.fps
        t0, t1 = self.keys[0].time, self.keys[-1].time
        span = t1 - t0
        if span <= 0 or self.loop == "hold":
            return min(max(t, t0), t1)
        u = (t - t0) % (2 * span if self.loop == "pingpong" else span)
        if self.loop == "pingpong" and u > span:
            u = 2 * span - u
        return t0 + u

    def camera(self, index: int) -> Camera:
        t = self._time(index)
        keys = self.keys
        if t <= keys[0].time:
            V = keys[0].viewmat
        elif t >= keys[-1].time:
            V = keys[-1].viewmat
        else:
            k = max(i for i in range(len(keys)) if keys[i].time <= t)
            a, b = keys[k], keys[k + 1]
            V = blend_viewmats(a.viewmat, b.viewmat, (t - a.time) / (b.time - a.time))
        return Camera(np.asarray(V, np.float32), self.K, self.width, self.height)


def _num(obj: dict, key: str, where: str, default=None, positive: bool = False) -> float:
    v = obj.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise CameraPathError(f"{where}: field {key!r} must be a finite number, got {v!r}")
    if positive and v <= 0:
        raise CameraPathError(f"{where}: field {key!r} must be > 0, got {v!r}")
    return float(v)


def _vec(v, n: int, where: str) -> np.ndarray:
    try:
        a = np.asarray(v, np.float64)
    except (TypeError, ValueError):
        a = None
    if a is None or a.shape != (n,) or not np.isfinite(a).all():
        raise CameraPathError(f"{where}: expected a list of {n} finite numbers, got {v!r}")
    return a


def parse_camera_path(data: dict, fps: float, where: str = "camera path") -> PathPose:
    """Validate and build a `PathPose` from the parsed JSON object (see `load_camera_path`)."""
    if not isinstance(data, dict):
        raise CameraPathError(f"{where}: expected a JSON object at the top level, got {type(data).__name__}")
    if data.get("version", 1) != 1:
        raise CameraPathError(f"{where}: unsupported 'version' {data.get('version')!r} (expected 1)")
    known = {"version", "width", "height", "fl_x", "fl_y", "cx", "cy", "fov_y_deg", "loop", "keyframes"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise CameraPathError(f"{where}: unknown field(s) {unknown} (valid: {sorted(known)})")
    width = data.get("width", 256)
    height = data.get("height", 256)
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 8192:
            raise CameraPathError(f"{where}: field {name!r} must be an integer in [1, 8192], got {v!r}")
    if "fl_x" in data or "fl_y" in data:
        fx = _num(data, "fl_x", where, data.get("fl_y"), positive=True)
        fy = _num(data, "fl_y", where, fx, positive=True)
    else:
        fov = _num(data, "fov_y_deg", where, 30.0, positive=True)
        if fov >= 179:
            raise CameraPathError(f"{where}: field 'fov_y_deg' must be < 179, got {fov}")
        fy = fx = 0.5 * height / math.tan(math.radians(fov) / 2)
    cx = _num(data, "cx", where, width / 2)
    cy = _num(data, "cy", where, height / 2)
    loop = data.get("loop", "hold")
    if loop not in ("hold", "repeat", "pingpong"):
        raise CameraPathError(f"{where}: field 'loop' must be 'hold', 'repeat' or 'pingpong', got {loop!r}")
    kfs = data.get("keyframes")
    if not isinstance(kfs, list) or not kfs:
        raise CameraPathError(f"{where}: field 'keyframes' must be a non-empty list, got {kfs!r}")
    keys: List[_Key] = []
    for i, kf in enumerate(kfs):
        w = f"{where}: keyframes[{i}]"
        if not isinstance(kf, dict):
            raise CameraPathError(f"{w}: expected an object, got {kf!r}")
        t = _num(kf, "time", w)
        if keys and t <= keys[-1].time:
            raise CameraPathError(f"{w}: 'time' must increase (got {t} after {keys[-1].time})")
        if "viewmat" in kf:
            try:
                V = np.asarray(kf["viewmat"], np.float64)
            except (TypeError, ValueError):
                V = np.zeros(0)
            if V.shape != (4, 4) or not np.isfinite(V).all():
                raise CameraPathError(f"{w}: 'viewmat' must be a 4x4 list of finite numbers")
            R = V[:3, :3]
            if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) <= 0 \
                    or not np.allclose(V[3], [0, 0, 0, 1], atol=1e-6):
                raise CameraPathError(f"{w}: 'viewmat' must be a rigid world-to-camera transform "
                                      "(orthonormal rotation with det +1, last row 0 0 0 1)")
        elif "position" in kf:
            try:
                V = look_at(_vec(kf["position"], 3, f"{w}.position"),
                            _vec(kf.get("look_at", [0, 0, 0]), 3, f"{w}.look_at"),
                            _vec(kf.get("down", [0, 1, 0]), 3, f"{w}.down"))
            except CameraPathError:
                raise
            except ValueError as e:
                raise CameraPathError(f"{w}: {e}") from None
        else:
            raise CameraPathError(f"{w}: needs 'viewmat' (4x4 world-to-camera, OpenCV) or 'position' "
                                  "(+ optional 'look_at', 'down')")
        keys.append(_Key(t, V))
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float32)
    return PathPose(keys, K, width, height, fps, loop)


def load_camera_path(path: Path, fps: float) -> PathPose:
    """Read a camera-path JSON file:

        {"version": 1, "width": 512, "height": 512,
         "fl_x": 900, "fl_y": 900, "cx": 256, "cy": 256,      # or "fov_y_deg": 30 (default)
         "loop": "hold" | "repeat" | "pingpong",              # after the last keyframe (default hold)
         "keyframes": [
           {"time": 0.0, "position": [0, 0, -0.6], "look_at": [0, 0, 0], "down": [0, 1, 0]},
           {"time": 2.0, "viewmat": [[1,0,0,0],[0,1,0,0],[0,0,1,0.6],[0,0,0,1]]}]}

    Times are seconds on the audio timeline; positions in metres in the head frame (face at -z).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CameraPathError(f"camera path file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CameraPathError(f"camera path file {path} is not valid JSON: {e}") from None
    return parse_camera_path(data, fps, where=f"camera path {path}")


def clip_pose_from_capture(ds, width: Optional[int] = None, height: Optional[int] = None,
                           mode: Literal["pingpong", "crossfade"] = "pingpong",
                           crossfade: int = 12) -> ClipPose:
    """The training clip's cameras from a loaded capture (avatar.data.Capture)."""
    src = ClipPose(ds.viewmats, ds.Ks, ds.width, ds.height, mode, crossfade)
    if width is None and height is None:
        return src
    w = width or round(ds.width * height / ds.height)
    h = height or round(ds.height * width / ds.width)
    Ks = np.asarray(src.Ks, np.float64).copy()
    Ks[:, 0] *= w / ds.width
    Ks[:, 1] *= h / ds.height
    return ClipPose(src.viewmats, Ks, w, h, mode, crossfade)
