"""capture tracking/crop/masks/background/landmark-backend units on synthetic landmarks (no media)."""
import numpy as np
import pytest

from avatar.data import LABELS
from avatar.data.face_model import CANONICAL, FACE_OVAL, LIPS_INNER
from capture.crop import crop_boxes, crop_image, crop_K, crop_points
from avatar.data.cameras import quat_to_rotmat, rotmat_to_quat
from capture.errors import CaptureError
from capture.landmarks import FaceAlignmentBackend, IBUG68_TO_MP, KnownBackend, runs, select_track
from capture.tracking import backproject, blink_from_ear, rotation_angles_deg, smooth_poses, track


def _R(yaw, pitch, roll):
    """head-to-camera rotation R = Ry(yaw) Rx(pitch) Rz(roll), degrees."""
    y, p, r = np.radians([yaw, pitch, roll])
    Ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    Rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    Rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return Ry @ Rx @ Rz


def _project(R, t, f, w, h, pts=None):
    X = (CANONICAL if pts is None else pts).astype(np.float64) @ R.T + t
    return np.stack([f * X[:, 0] / X[:, 2] + w / 2, f * X[:, 1] / X[:, 2] + h / 2], 1)


def _sequence(F=40, f=700.0, w=640, h=480, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    angs = np.stack([15 * np.sin(np.linspace(0, 3, F)), 8 * np.sin(np.linspace(0, 5, F)),
                     5 * np.cos(np.linspace(0, 2, F))], 1)
    ts = np.stack([0.02 * np.sin(np.linspace(0, 2, F)), 0.01 * np.ones(F), 0.55 + 0.03 * np.cos(np.linspace(0, 4, F))], 1)
    mouth = 0.5 + 0.5 * np.sin(np.linspace(0, 12, F))
    lm = np.zeros((F, 478, 2), np.float32)
    from avatar.data.face_model import LOWER_LIP_INNER, LOWER_LIP_OUTER

    for i in range(F):
        pts = CANONICAL.astype(np.float64).copy()
        pts[LOWER_LIP_INNER, 1] += 0.012 * mouth[i]   # open the mouth (lower lip down)
        pts[LOWER_LIP_OUTER, 1] += 0.012 * mouth[i]
        lm[i] = _project(_R(*angs[i]), ts[i], f, w, h, pts) + rng.normal(0, noise, (478, 2))
    return lm, angs, ts, mouth


def test_track_recovers_pose_focal_and_mouth():
    lm, angs, ts, mouth = _sequence(noise=0.3)
    valid = np.ones(len(lm), bool)
    r = track(lm, valid, (640, 480), smooth_sigma=0.0)
    assert abs(r["focal"] - 700) / 700 < 0.25, r["focal"]
    est = rotation_angles_deg(r["head_pose"])
    assert np.abs(est - angs).max() < 1.5, np.abs(est - angs).max(0)
    # camera-to-head: the head centre is at ts in the camera
    pos = np.linalg.inv(r["head_pose"])[:, :3, 3]
    assert np.abs(pos[:, :2] - ts[:, :2]).max() < 0.01
    assert np.corrcoef(r["mouth_open"], mouth)[0, 1] > 0.98
    # pose-free 3D landmarks: the rigid part matches the canonical face
    assert np.abs(r["landmarks3d"][:, 1] - CANONICAL[1]).max() < 0.004


def test_track_exact_with_known_K():
    lm, angs, ts, _ = _sequence(noise=0.0)
    K = np.array([[700.0, 0, 320], [0, 700, 240], [0, 0, 1]])
    r = track(lm, np.ones(len(lm), bool), (640, 480), K=K, smooth_sigma=0.0)
    assert np.abs(rotation_angles_deg(r["head_pose"]) - angs).max() < 0.6  # lower lip moves: rigid subset only
    R = np.swapaxes(r["head_pose"][:, :3, :3], 1, 2)
    t = -np.einsum("fij,fj->fi", R, r["head_pose"][:, :3, 3])
    lm3 = backproject(lm[3], K, R[3], t[3])
    # back-projection reproduces the image landmarks exactly
    np.testing.assert_allclose(_project(R[3], t[3], 700, 640, 480, lm3.astype(np.float64)), lm[3], atol=1e-3)


def test_smoothing_reduces_jitter_and_respects_gaps():
    lm, angs, _, _ = _sequence(F=60, noise=1.5, seed=1)
    valid = np.ones(60, bool)
    valid[30:33] = False
    raw = track(lm, valid, (640, 480), focal=700, smooth_sigma=0.0)
    sm = track(lm, valid, (640, 480), focal=700, smooth_sigma=1.5)
    jr = np.abs(np.diff(rotation_angles_deg(raw["head_pose"])[:30], 2, axis=0)).mean()
    js = np.abs(np.diff(rotation_angles_deg(sm["head_pose"])[:30], 2, axis=0)).mean()
    assert js < 0.5 * jr
    assert np.allclose(sm["head_pose"][31], np.eye(4))  # invalid frames untouched


def test_quaternion_helpers():
    from scipy.spatial.transform import Rotation

    R = Rotation.random(50, random_state=3).as_matrix()
    np.testing.assert_allclose(quat_to_rotmat(rotmat_to_quat(R)), R, atol=1e-12)
    R2, _ = smooth_poses(R[:1].repeat(5, 0), np.zeros((5, 3)), np.ones(5, bool), 2.0)
    np.testing.assert_allclose(R2, R[:1].repeat(5, 0), atol=1e-12)


def test_blink_scale():
    ear = np.r_[np.full(50, 0.3), [0.2, 0.1, 0.05]]
    b = blink_from_ear(ear, 0.35)
    assert b[:50].max() == 0 and b[-1] == 1.0 and 0.3 < b[50] < 0.7


def test_select_track_largest_consistently():
    lm, _, _, _ = _sequence(F=10)
    small = (lm - lm.mean(1, keepdims=True)) * 0.5 + [100, 100]
    faces = np.full((10, 3, 478, 2), np.nan, np.float32)
    counts = np.full(10, 2)
    for i in range(10):
        order = (lm[i], small[i]) if i % 2 else (small[i], lm[i])  # detector order flips
        faces[i, 0], faces[i, 1] = order
    counts[4] = 0
    out, valid, multi = select_track(faces, counts)
    assert valid.sum() == 9 and multi.sum() == 9
    np.testing.assert_allclose(out[valid], lm[valid])
    assert runs(~valid) == [(4, 5)]


def test_crop_intrinsics_consistent():
    lm, _, _, _ = _sequence(F=20)
    valid = np.ones(20, bool)
    for mode in ("fixed", "smooth"):
        boxes = crop_boxes(lm, valid, (640, 480), mode=mode, scale=2.0, fps=25, smooth_s=0.2)
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 0] + boxes[:, 2] <= 640).all() and (boxes[:, 1] + boxes[:, 2] <= 480).all()
        if mode == "fixed":
            assert (boxes == boxes[0]).all()
    K = np.array([[700.0, 0, 320], [0, 700, 240], [0, 0, 1]])
    box = (100, 50, 300)
    K2 = crop_K(K, box, 512)
    X = np.array([0.03, -0.02, 0.6])
    p = (K @ X)[:2] / X[2]
    p2 = (K2 @ X)[:2] / X[2]
    np.testing.assert_allclose(crop_points(p[None].astype(np.float32), box, 512)[0], p2, rtol=1e-5)
    # image crop: pixel (i, j) of the crop samples the source at its centre
    img = np.zeros((480, 640, 3), np.uint8)
    img[150:160, 200:210] = 255
    out = crop_image(img, (100, 50, 300), 600)   # 2x upsample
    ys, xs = np.nonzero(out[..., 0] > 127)
    assert abs(xs.mean() + 0.5 - ((205 - 100) * 2)) < 1.0 and abs(ys.mean() + 0.5 - ((155 - 50) * 2)) < 1.0


def test_label_mask_regions():
    from capture.masks import label_mask

    lm, _, _, mouth = _sequence(F=20, f=900)
    i = int(np.argmax(mouth))
    person = np.zeros((480, 640), bool)
    person[60:, 160:480] = True          # a person blob: head and shoulders
    m = label_mask(person, lm[i])
    assert set(np.unique(m)) <= set(LABELS.values())
    c = lm[i][FACE_OVAL].mean(0)
    assert m[int(c[1]), int(c[0])] == LABELS["face"] or m[int(c[1]), int(c[0])] == LABELS["mouth"]
    mc = lm[i][LIPS_INNER].mean(0)
    assert m[int(mc[1]), int(mc[0])] == LABELS["mouth"]
    assert m[470, 320] == LABELS["torso"]          # bottom centre: below the jaw
    assert m[62, 320] == LABELS["head"]            # top of the person blob: hair
    assert m[5, 5] == LABELS["background"]


def test_background_plate_recovers_static_scene():
    from capture.background import background_plate

    rng = np.random.default_rng(0)
    scene = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    pairs = []
    for k in range(12):
        img = scene.copy()
        lab = np.zeros((64, 80), np.uint8)
        x = 5 + 5 * k
        img[10:40, x:x + 15] = 0      # a moving "person"
        lab[10:40, x:x + 15] = LABELS["face"]
        pairs.append((img, lab))
    plate, holes = background_plate(pairs, dilate=3)
    assert holes < 0.2
    # where the person left, the plate is the scene
    err = np.abs(plate.astype(int) - scene.astype(int))[45:, :].max()
    assert err == 0
    assert np.abs(plate.astype(int) - scene.astype(int))[10:40, 30:60].mean() < 5


def test_face_alignment_offline_names_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(CaptureError) as e:
        FaceAlignmentBackend()
    msg = str(e.value)
    assert "2DFAN4" in msg and "s3fd" in msg and str(tmp_path / "torch" / "hub" / "checkpoints") in msg
    assert IBUG68_TO_MP.shape == (68,) and len(set(IBUG68_TO_MP.tolist())) == 68


def test_known_backend(tmp_path):
    with pytest.raises(CaptureError, match="ground_truth.npz"):
        KnownBackend(tmp_path / "ground_truth.npz", 25, 25, (512, 512), (256, 256))
    lm = np.random.default_rng(0).random((30, 478, 2)).astype(np.float32) * 512
    np.savez(tmp_path / "ground_truth.npz", landmarks2d=lm)
    kb = KnownBackend(tmp_path / "ground_truth.npz", 30, 25, (512, 512), (256, 256))
    out = kb(None, 5)  # output frame 5 at 25 fps = source frame 6 at 30 fps
    np.testing.assert_allclose(out[0], lm[6] * 0.5)
    assert kb(None, 40) == []


def test_face_alignment_backend_fits_478_topology(tmp_path, monkeypatch):
    """With its weights in the cache, the face-alignment backend's 68 points are carried onto the
    478-point topology (a stand-in module replaces the optional package and its network)."""
    import sys
    import types

    ckpt = tmp_path / "torch" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    for f in ("s3fd-619a316812.pth", "2DFAN4-cd938726ad.zip"):
        (ckpt / f).write_bytes(b"x")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    truth = 900 * CANONICAL[:, :2] / (0.6 + CANONICAL[:, 2:]) + [320, 240]   # frontal, perspective

    class FakeFA:
        def __init__(self, *a, **k):
            pass

        def get_landmarks_from_image(self, img):
            return [truth[IBUG68_TO_MP] - 0.5]      # FAN reports pixel-index coordinates

    mod = types.SimpleNamespace(LandmarksType=types.SimpleNamespace(TWO_D=1), FaceAlignment=FakeFA)
    monkeypatch.setitem(sys.modules, "face_alignment", mod)
    lm = FaceAlignmentBackend()(np.zeros((480, 640, 3), np.uint8), 0)[0]
    assert lm.shape == (478, 2)
    np.testing.assert_allclose(lm[IBUG68_TO_MP], truth[IBUG68_TO_MP], atol=1e-3)
    assert np.median(np.linalg.norm(lm - truth, axis=1)) < 3.0    # the other 410 points: affine fit
