"""avatar.data: writer -> reader round trip, conventions, motion codes, and clear errors."""
import json

import numpy as np
import pytest

from avatar.data import (LABELS, CaptureWriter, DatasetError, MotionSpace, default_split,
                         load_capture)
from avatar.data.cameras import (c2w_opencv_to_opengl, opengl_c2w_from_viewmat, rigid_inverse,
                                 viewmat_from_opengl_c2w)
from avatar.data.face_model import CANONICAL


def _rot(ax, ay, az):
    import cv2

    return cv2.Rodrigues(np.array([ax, ay, az], np.float64))[0]


def _pose(i):
    T = np.eye(4)
    T[:3, :3] = _rot(0.1 * i, -0.05 * i, 0.02)
    T[:3, 3] = [0.01 * i, -0.02, -0.5]
    return T


def _write(root, F=11, H=24, W=32, audio=True):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (F, H, W, 3), dtype=np.uint8)
    masks = rng.integers(0, 5, (F, H, W), dtype=np.uint8)
    K = np.array([[40.0, 0, 16.0], [0, 41.0, 12.0], [0, 0, 1]])
    lm3 = np.repeat(CANONICAL[None], F, 0) + rng.normal(0, 1e-3, (F, 478, 3)).astype(np.float32)
    ms = MotionSpace()
    with CaptureWriter(root, fps=25.0) as w:
        for i in range(F):
            w.add_frame(imgs[i], masks[i], K, _pose(i), time=2 * i, camera_id=i % 2)
        w.write_background(imgs[0])
        if audio:
            w.write_audio(np.sin(np.linspace(0, 100, 16000)).astype(np.float32) * 0.5)
        w.write_tracks(landmarks2d=rng.random((F, 478, 2)) * W, landmarks3d=lm3,
                       motion=ms.encode(lm3, CANONICAL), blink=np.zeros(F), mouth_open=np.zeros(F),
                       head_pose=np.stack([_pose(i) for i in range(F)]), neutral=CANONICAL)
        w.close(motion_space=ms.to_dict())
    return imgs, masks, K


def test_round_trip(tmp_path):
    imgs, masks, K = _write(tmp_path / "cap")
    ds = load_capture(tmp_path / "cap")
    assert ds.num_frames == 11 and (ds.width, ds.height) == (32, 24) and ds.fps == 25.0
    assert ds.Ks.shape == (11, 3, 3) and ds.Ks.dtype == np.float32
    np.testing.assert_allclose(ds.Ks[3], K, atol=1e-6)
    # viewmat is the inverse of the camera-to-head pose (OpenCV), converted from OpenGL in the file
    for i in (0, 5, 10):
        np.testing.assert_allclose(ds.viewmats[i] @ _pose(i), np.eye(4), atol=1e-5)
        np.testing.assert_allclose(ds.tracks["head_pose"][i], _pose(i), atol=1e-6)
    np.testing.assert_array_equal(ds.frame_times, 2 * np.arange(11))
    np.testing.assert_array_equal(ds.camera_ids, np.arange(11) % 2)
    np.testing.assert_array_equal(ds.image_uint8(4), imgs[4])  # PNG is lossless
    np.testing.assert_allclose(ds.image(4), imgs[4] / 255.0, atol=1e-6)
    assert ds.image(4).dtype == np.float32
    np.testing.assert_array_equal(ds.mask(7), masks[7])
    assert ds.background.shape == (24, 32, 3)
    assert ds.audio.dtype == np.float32 and ds.audio.shape == (16000,)
    assert ds.split["test"].tolist() == [10] and ds.split["train"].tolist() == list(range(10))
    assert ds.motion_space == MotionSpace()
    assert ds.audio_sample(3) == round(6 / 25 * 16000)
    # nerfstudio-compatible: OpenGL c2w, per-frame intrinsics, label masks (nonzero = foreground)
    meta = json.loads((tmp_path / "cap" / "transforms.json").read_text())
    f0 = meta["frames"][1]
    c2w_gl = np.array(f0["transform_matrix"])
    np.testing.assert_allclose(c2w_gl, c2w_opencv_to_opengl(_pose(1)), atol=1e-9)
    assert meta["fl_x"] == 40.0 and f0["file_path"] == "images/000001.png"
    assert meta["avatar"]["labels"] == LABELS


def test_no_audio(tmp_path):
    _write(tmp_path / "cap", audio=False)
    ds = load_capture(tmp_path / "cap")
    assert ds.audio is None and not ds.has_audio


def test_conventions_round_trip():
    T = _pose(3)
    v = rigid_inverse(T)
    np.testing.assert_allclose(viewmat_from_opengl_c2w(opengl_c2w_from_viewmat(v)), v, atol=1e-12)
    # a frontal camera at distance d: viewmat = [[I, (0,0,d)]] (CONTRACTS.md); OpenGL c2w looks down -z
    d = 0.6
    c2w = np.eye(4)
    c2w[2, 3] = -d
    gl = c2w_opencv_to_opengl(c2w)
    np.testing.assert_allclose(viewmat_from_opengl_c2w(gl)[:3, 3], [0, 0, d])
    assert gl[2, 2] == -1.0  # OpenGL camera's +z (backward) points toward -z of the head frame


@pytest.mark.parametrize("breakage, needle, stage", [
    ("transforms", "transforms.json", "write"),
    ("image", "000003.png", "frames"),
    ("mask", "000002.png", "masks"),
    ("tracks", "tracks.npz", "tracking"),
    ("tracks_shape", "mouth_open", "tracking"),
    ("audio", "audio.wav", "audio"),
    ("background", "background.png", "background"),
])
def test_errors_name_file_and_stage(tmp_path, breakage, needle, stage):
    root = tmp_path / "cap"
    _write(root)
    if breakage == "transforms":
        (root / "transforms.json").unlink()
    elif breakage == "image":
        (root / "images" / "000003.png").unlink()
    elif breakage == "mask":
        (root / "masks" / "000002.png").unlink()
    elif breakage == "tracks":
        (root / "tracks.npz").unlink()
    elif breakage == "tracks_shape":
        z = dict(np.load(root / "tracks.npz"))
        z["mouth_open"] = z["mouth_open"][:-1]
        np.savez(root / "tracks.npz", **z)
    elif breakage == "audio":
        (root / "audio.wav").unlink()
    elif breakage == "background":
        (root / "background.png").unlink()
    with pytest.raises(DatasetError) as e:
        load_capture(root)
    assert needle in str(e.value) and f"'{stage}'" in str(e.value)


def test_corrupt_image_read_error(tmp_path):
    root = tmp_path / "cap"
    _write(root)
    (root / "images" / "000001.png").write_bytes(b"not a png")
    ds = load_capture(root)
    with pytest.raises(DatasetError, match="000001.png"):
        ds.image(1)


def test_split_protocol():
    s = default_split(110)
    assert len(s["test"]) == 10 and s["test"][0] == 100 and s["train"][-1] == 99
    s = default_split(5)
    assert len(s["test"]) == 1


def test_motion_space_properties():
    ms = MotionSpace()
    rng = np.random.default_rng(1)
    neutral = CANONICAL.astype(np.float64)
    # rigid motion and uniform size change of the neutral give zero codes... (size: after the neutral
    # is re-estimated for the bigger person, the same expression gives the same code)
    R = _rot(0.2, -0.1, 0.05)
    moved = neutral @ R.T + [0.01, 0.02, -0.03]
    assert np.abs(ms.encode(moved[None], neutral)).max() < 1e-5
    # an open mouth moves the lower-lip code; the same relative motion on a 1.3x face gives the same code
    open_ = neutral.copy()
    from avatar.data.face_model import LOWER_LIP_INNER, LOWER_LIP_OUTER
    open_[LOWER_LIP_INNER, 1] += 0.01
    open_[LOWER_LIP_OUTER, 1] += 0.01
    c1 = ms.encode(open_[None], neutral)
    c2 = ms.encode((1.3 * open_)[None], 1.3 * neutral)
    assert c1.shape == (1, ms.dim) and np.abs(c1).max() > 0.5
    np.testing.assert_allclose(c1, c2, atol=1e-5)
    # neutral estimation picks closed-mouth frames
    seq = np.stack([neutral if i % 3 else open_ for i in range(30)]) + rng.normal(0, 1e-5, (30, 478, 3))
    mo = np.array([0.0 if i % 3 else 0.3 for i in range(30)])
    est = ms.estimate_neutral(seq, mouth_open=mo)
    assert np.abs(est - neutral).max() < 1e-4
    # serialisation
    assert MotionSpace.from_dict(json.loads(json.dumps(ms.to_dict()))) == ms
    with pytest.raises(ValueError, match="version"):
        MotionSpace.from_dict({**ms.to_dict(), "version": 99})
