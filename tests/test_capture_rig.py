"""Multi-view rig import: calibrated cameras (nerfstudio transforms.json or COLMAP text) + per-camera
frame folders -> one capture folder with a camera id per frame and head poses consistent with the
calibration. Landmarks come from the "known" backend (projected canonical face), so no face images
are needed."""
import json

import numpy as np
import pytest

from avatar.data import load_capture
from avatar.data.cameras import c2w_opencv_to_opengl, rigid_inverse
from avatar.data.face_model import CANONICAL
from capture.pipeline import capture
from capture.rig import load_calibration

W, H, T = 160, 120, 80
UNITS = 10.0  # rig units per metre (the calibration is not metric)


def _rot_y(deg):
    a = np.radians(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def _rot_x(deg):
    a = np.radians(deg)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def _make_rig(root):
    import cv2

    K = np.array([[150.0, 0, W / 2], [0, 150.0, H / 2], [0, 0, 1]])
    cams = []
    for k, yaw in enumerate((0.0, 35.0)):
        c2w = np.eye(4)
        c2w[:3, :3] = _rot_y(yaw)
        c2w[:3, 3] = _rot_y(yaw) @ np.array([0, 0, -0.6])   # on a circle around the head, looking at it
        cams.append(c2w)
    head = []   # rig-from-head over time (metres)
    for t in range(T):
        Th = np.eye(4)
        Th[:3, :3] = _rot_y(10 * np.sin(t / 9)) @ _rot_x(6 * np.sin(t / 13))
        Th[:3, 3] = [0.01 * np.sin(t / 7), 0.005 * np.cos(t / 11), 0.0]
        head.append(Th)
    rng = np.random.default_rng(0)
    for k, c2w in enumerate(cams):
        d = root / f"cam{k}"
        d.mkdir()
        lm = np.zeros((T, 478, 2), np.float32)
        for t in range(T):
            X = (rigid_inverse(c2w) @ head[t] @ np.c_[CANONICAL, np.ones(478)].T).T[:, :3]
            lm[t] = (X[:, :2] / X[:, 2:3]) * 150.0 + [W / 2, H / 2]
            cv2.imwrite(str(d / f"{t:05d}.png"), rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
        np.savez(d / "ground_truth.npz", landmarks2d=lm)
    rig_cams = []
    for c2w in cams:
        m = c2w.copy()
        m[:3, 3] *= UNITS
        rig_cams.append(m)
    return K, rig_cams, head


def _write_nerfstudio(path, K, cams):
    frames = [{"file_path": f"cam{k}.png", "transform_matrix": c2w_opencv_to_opengl(c).tolist()}
              for k, c in enumerate(cams)]
    path.write_text(json.dumps({"fl_x": K[0, 0], "fl_y": K[1, 1], "cx": K[0, 2], "cy": K[1, 2], "w": W, "h": H,
                                "frames": frames}))


def _write_colmap(folder, K, cams):
    from scipy.spatial.transform import Rotation

    folder.mkdir()
    (folder / "cameras.txt").write_text(f"# c\n1 PINHOLE {W} {H} {K[0, 0]} {K[1, 1]} {K[0, 2]} {K[1, 2]}\n")
    lines = ["# images"]
    for k, c in enumerate(cams):
        w2c = rigid_inverse(c)
        x, y, z, w = Rotation.from_matrix(w2c[:3, :3]).as_quat()
        tx, ty, tz = w2c[:3, 3]
        lines += [f"{k + 1} {w} {x} {y} {z} {tx} {ty} {tz} 1 cam{k}.jpg", ""]
    (folder / "images.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("fmt", ["nerfstudio", "colmap"])
def test_rig_import(tmp_path, fmt):
    K, cams, head = _make_rig(tmp_path)
    if fmt == "nerfstudio":
        calib = tmp_path / "transforms.json"
        _write_nerfstudio(calib, K, cams)
    else:
        calib = tmp_path / "colmap"
        _write_colmap(calib, K, cams)
    loaded = load_calibration(calib)
    np.testing.assert_allclose(loaded[1]["c2w"], cams[1], atol=1e-9)
    # inputs in the opposite order: matched to the calibration by name
    capture([tmp_path / "cam1", tmp_path / "cam0"], tmp_path / "out", rig=calib, backend="known",
            allow_no_audio=True, size=96, log=lambda m: None)
    ds = load_capture(tmp_path / "out")
    assert ds.num_frames == 2 * T and sorted(set(ds.camera_ids.tolist())) == [0, 1]
    names = {c["id"]: c["name"] for c in json.loads((tmp_path / "out" / "transforms.json").read_text())["avatar"]["cameras"]}
    # every (time, camera): viewmat = camera-from-head of the ground truth (metres), rotation within 0.5 deg
    summary = json.loads((tmp_path / "out" / "report" / "summary.json").read_text())
    assert summary["output"]["cameras"] == 2
    rot_err, pos_err = [], []
    for i in range(ds.num_frames):
        k = int(names[int(ds.camera_ids[i])][-1])
        c2w_m = cams[k].copy()
        c2w_m[:3, 3] /= UNITS
        gt = rigid_inverse(c2w_m) @ head[int(ds.frame_times[i])]
        v = ds.viewmats[i].astype(np.float64)
        c = np.clip((np.trace(v[:3, :3].T @ gt[:3, :3]) - 1) / 2, -1, 1)
        rot_err.append(np.degrees(np.arccos(c)))
        pos_err.append(np.linalg.norm(v[:3, 3] - gt[:3, 3]))
    assert max(rot_err) < 0.5, max(rot_err)
    assert max(pos_err) < 0.01, max(pos_err)
    # at one time both cameras see one head: the relative pose of the cameras is the calibration's
    t0 = np.flatnonzero(ds.frame_times == 5)
    a, b = t0[0], t0[1]
    rel = ds.viewmats[b] @ rigid_inverse(ds.viewmats[a])
    ka, kb = (int(names[int(ds.camera_ids[j])][-1]) for j in (a, b))
    rel_gt = rigid_inverse(cams[kb]) @ cams[ka]
    np.testing.assert_allclose(rel[:3, :3], rel_gt[:3, :3], atol=1e-3)
    # split by time: both cameras of a held-out time are in the test set
    assert set(ds.frame_times[ds.split["test"]]) .isdisjoint(set(ds.frame_times[ds.split["train"]]))
