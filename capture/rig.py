"""Multi-view rigs: calibrated cameras from nerfstudio transforms.json or COLMAP text
(cameras.txt + images.txt), matched to per-camera videos or frame folders."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from avatar.data.cameras import c2w_opengl_to_opencv, quat_to_rotmat, rigid_inverse

from .errors import CaptureError


def _load_nerfstudio(path: Path) -> List[Dict]:
    try:
        meta = json.loads(path.read_text())
    except ValueError as e:
        raise CaptureError(f"{path}: not valid JSON ({e})") from None
    frames = meta.get("frames") or []
    if not frames:
        raise CaptureError(f"{path}: no 'frames' (expected a nerfstudio transforms.json with one frame per camera)")
    cams = []
    for i, f in enumerate(frames):
        def g(k):
            v = f.get(k, meta.get(k))
            if v is None:
                raise CaptureError(f"{path}: frame {i} has no '{k}' (per frame or global)")
            return float(v)
        K = np.array([[g("fl_x"), 0, g("cx")], [0, g("fl_y"), g("cy")], [0, 0, 1]])
        c2w = c2w_opengl_to_opencv(np.asarray(f["transform_matrix"], np.float64))
        name = Path(f.get("file_path", f"cam{i}")).stem
        cams.append({"name": name, "K": K, "size": (int(g("w")), int(g("h"))), "c2w": c2w})
    return cams


def _load_colmap(folder: Path) -> List[Dict]:
    ct, it = folder / "cameras.txt", folder / "images.txt"
    for p in (ct, it):
        if not p.is_file():
            raise CaptureError(f"--rig {folder}: {p.name} not found (expected COLMAP text cameras.txt + images.txt)")
    intr = {}
    for line in ct.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        cid, model, w, h = int(parts[0]), parts[1], int(parts[2]), int(parts[3])
        p = [float(v) for v in parts[4:]]
        if model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
            fx = fy = p[0]
            cx, cy = p[1], p[2]
        elif model in ("PINHOLE", "OPENCV", "FULL_OPENCV"):
            fx, fy, cx, cy = p[:4]
        else:
            raise CaptureError(f"{ct}: camera model {model} is not supported (PINHOLE, SIMPLE_PINHOLE, OPENCV, ...)")
        # COLMAP: pixel centres at +0.5 like ours
        intr[cid] = (np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]]), (w, h))
    cams = []
    lines = [ln for ln in it.read_text().splitlines() if not ln.startswith("#")]
    for k in range(0, len(lines), 2):
        parts = lines[k].split()
        if len(parts) < 10:
            continue
        q, t, cid, name = [float(v) for v in parts[1:5]], [float(v) for v in parts[5:8]], int(parts[8]), parts[9]
        if cid not in intr:
            raise CaptureError(f"{it}: image {name} uses camera {cid} missing from cameras.txt")
        w2c = np.eye(4)
        w2c[:3, :3] = quat_to_rotmat(q)
        w2c[:3, 3] = t
        K, size = intr[cid]
        cams.append({"name": Path(name).stem, "K": K, "size": size, "c2w": rigid_inverse(w2c)})
    if not cams:
        raise CaptureError(f"{it}: no images")
    return cams


def load_calibration(path) -> List[Dict]:
    """Cameras [{name, K [3, 3] px, size (w, h), c2w [4, 4] OpenCV camera-to-rig}] in file order."""
    p = Path(path)
    if p.is_dir():
        if (p / "transforms.json").is_file():
            return _load_nerfstudio(p / "transforms.json")
        return _load_colmap(p)
    if p.suffix == ".json":
        return _load_nerfstudio(p)
    if p.name in ("cameras.txt", "images.txt"):
        return _load_colmap(p.parent)
    raise CaptureError(f"--rig {p}: expected a nerfstudio transforms.json or a folder with COLMAP cameras.txt/images.txt")


def match_sources(cams: List[Dict], sources: Sequence[Path]) -> List[int]:
    """Index of the camera for each source: by name (file/folder stem == camera name) when every
    source matches one, else by order."""
    if len(sources) != len(cams):
        raise CaptureError(f"--rig: {len(cams)} calibrated cameras but {len(sources)} videos/frame folders given")
    names = [c["name"] for c in cams]
    stems = [Path(s).stem for s in sources]
    if all(s in names for s in stems) and len(set(stems)) == len(stems):
        return [names.index(s) for s in stems]
    return list(range(len(sources)))


def fuse_rig_poses(head_pose: np.ndarray, valid: np.ndarray, c2w_rig: np.ndarray):
    """Make the per-camera PnP head poses of a rig consistent with its calibration.

    head_pose [C, T, 4, 4] camera-to-head from per-camera PnP (metres), valid [C, T],
    c2w_rig [C, 4, 4] camera-to-rig (rig units) -> (head_pose [C, T, 4, 4] consistent, valid_t [T],
    rig_scale = rig units per metre). The scale is the median ratio of calibrated to PnP camera-centre
    distances; the head's pose in the rig per time is the mean (quaternion average, mean
    translation) of the per-camera estimates."""
    from scipy.spatial.transform import Rotation

    C, T = valid.shape
    ratios = []
    for t in range(T):
        cs = [c for c in range(C) if valid[c, t]]
        for a in range(len(cs)):
            for b in range(a + 1, len(cs)):
                d_pnp = np.linalg.norm(head_pose[cs[a], t, :3, 3] - head_pose[cs[b], t, :3, 3])
                d_rig = np.linalg.norm(c2w_rig[cs[a], :3, 3] - c2w_rig[cs[b], :3, 3])
                if d_pnp > 1e-6:
                    ratios.append(d_rig / d_pnp)
    scale = float(np.median(ratios)) if ratios else 1.0
    c2w_m = c2w_rig.copy()
    c2w_m[:, :3, 3] /= scale
    out = np.tile(np.eye(4), (C, T, 1, 1))
    valid_t = valid.any(0)
    for t in np.flatnonzero(valid_t):
        Rs, ts = [], []
        for c in np.flatnonzero(valid[:, t]):
            rig_from_head = c2w_m[c] @ rigid_inverse(head_pose[c, t])
            Rs.append(rig_from_head[:3, :3])
            ts.append(rig_from_head[:3, 3])
        Rm = Rotation.from_matrix(np.stack(Rs)).mean().as_matrix()
        T_rh = np.eye(4)
        T_rh[:3, :3] = Rm
        T_rh[:3, 3] = np.mean(ts, 0)
        for c in range(C):
            out[c, t] = rigid_inverse(T_rh) @ c2w_m[c]
    return out, valid_t, scale
