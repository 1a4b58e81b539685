"""avatar.data.face_model: canonical face geometry, index groups, eye/mouth metrics."""
import numpy as np
import pytest

from avatar.data import face_model as fm


def test_canonical_shape_units_and_frame():
    lm = fm.CANONICAL
    assert lm.shape == (478, 3) and lm.dtype == np.float32
    assert not lm.flags.writeable
    # nose tip at the contract's position; face in front of the head centre (negative z)
    np.testing.assert_allclose(lm[fm.NOSE_TIP], [0.0, 0.0, -0.10], atol=1e-6)
    assert lm[:, 2].max() < 0.005 and lm[fm.NOSE_TIP, 2] == pytest.approx(lm[:, 2].min(), abs=2.5e-3)
    # metric: pupils 63 mm apart and level; face ~0.12-0.16 m wide, ~0.14-0.20 m forehead to chin
    assert np.linalg.norm(lm[473] - lm[468]) == pytest.approx(0.063, abs=1e-4)
    assert abs(lm[473, 1] - lm[468, 1]) < 1e-5
    width = np.ptp(lm[fm.FACE_OVAL, 0])
    height = lm[fm.CHIN, 1] - lm[fm.FOREHEAD, 1]
    assert 0.12 < width < 0.16 and 0.14 < height < 0.20
    # axes: subject's left eye (mediapipe LEFT_EYE) at +x (image right), eyes above mouth above chin (y down)
    assert lm[fm.LEFT_EYE, 0].mean() > 0.02 and lm[fm.RIGHT_EYE, 0].mean() < -0.02
    assert lm[fm.LEFT_EYE, 1].mean() < lm[fm.LIPS_OUTER, 1].mean() < lm[fm.CHIN, 1]
    assert lm[fm.LEFT_BROW, 1].mean() < lm[fm.LEFT_EYE, 1].mean()
    # mirror-symmetric about x = 0
    mirrored = lm * np.array([-1, 1, 1], np.float32)
    d = np.linalg.norm(mirrored[:, None] - lm[None], axis=-1).min(1)
    assert d.max() < 1e-4


def test_index_groups_valid_and_match_mediapipe():
    groups = dict(LIPS_OUTER=fm.LIPS_OUTER, LIPS_INNER=fm.LIPS_INNER, LEFT_EYE=fm.LEFT_EYE,
                  RIGHT_EYE=fm.RIGHT_EYE, LEFT_BROW=fm.LEFT_BROW, RIGHT_BROW=fm.RIGHT_BROW,
                  FACE_OVAL=fm.FACE_OVAL, NOSE=fm.NOSE)
    for name, g in groups.items():
        assert g.dtype == np.int64 and len(set(g.tolist())) == len(g), name
        assert g.min() >= 0 and g.max() < 478, name
    conn = pytest.importorskip("mediapipe.python.solutions.face_mesh_connections")

    def pts(edges):
        return {i for e in edges for i in e}

    assert set(fm.LIPS_OUTER) | set(fm.LIPS_INNER) == pts(conn.FACEMESH_LIPS)
    assert set(fm.LEFT_EYE) == pts(conn.FACEMESH_LEFT_EYE)
    assert set(fm.RIGHT_EYE) == pts(conn.FACEMESH_RIGHT_EYE)
    assert set(fm.LEFT_BROW) == pts(conn.FACEMESH_LEFT_EYEBROW)
    assert set(fm.RIGHT_BROW) == pts(conn.FACEMESH_RIGHT_EYEBROW)
    assert set(fm.FACE_OVAL) == pts(conn.FACEMESH_FACE_OVAL)
    assert set(fm.NOSE) == pts(conn.FACEMESH_NOSE)
    # contours are ordered: consecutive points are mediapipe edges
    edges = {frozenset(e) for e in conn.FACEMESH_FACE_OVAL}
    ring = fm.FACE_OVAL.tolist()
    assert all(frozenset((a, b)) in edges for a, b in zip(ring, ring[1:] + ring[:1]))


def test_triangles_face_the_camera():
    t, lm = fm.TRIANGLES, fm.CANONICAL.astype(np.float64)
    assert t.ndim == 2 and t.shape[1] == 3 and len(t) > 800 and t.max() < 468
    n = np.cross(lm[t[:, 1]] - lm[t[:, 0]], lm[t[:, 2]] - lm[t[:, 0]])
    assert (n[:, 2] <= 0).all()
    area = 0.5 * np.linalg.norm(n, axis=1).sum()
    assert 0.02 < area < 0.05  # m^2: a face's front surface


def test_metrics_scale_free_batched_and_torch():
    lm = fm.CANONICAL
    ear = fm.eye_aspect_ratio(lm)
    mo = fm.mouth_openness(lm)
    assert 0.15 < ear < 0.45 and 0.0 <= mo < 0.2
    # scale, rotation and 2D projection barely change them
    r = np.array([[0.96, -0.28, 0], [0.28, 0.96, 0], [0, 0, 1]], np.float32)
    lm2 = 3.0 * lm @ r.T + 1.0
    assert fm.eye_aspect_ratio(lm2) == pytest.approx(ear, rel=1e-4)
    assert fm.mouth_openness(lm2[:, :2]) == pytest.approx(mo, rel=0.1)  # frontal projection
    batch = np.stack([lm, lm2])
    assert fm.eye_aspect_ratio(batch).shape == (2,)
    assert fm.eye_aspect_ratio(batch, per_eye=True).shape == (2, 2)
    torch = pytest.importorskip("torch")
    t = torch.as_tensor(np.array(batch))
    np.testing.assert_allclose(fm.mouth_openness(t).numpy(), fm.mouth_openness(batch), rtol=1e-5)
    assert fm.eye_aspect_ratio(t, per_eye=True).shape == (2, 2)


def test_metrics_respond_to_eye_closing_and_mouth_opening():
    lm = np.array(fm.CANONICAL)
    closed = lm.copy()
    for up, lo in ((fm.LEFT_EYE_UPPER, fm.LEFT_EYE_LOWER), (fm.RIGHT_EYE_UPPER, fm.RIGHT_EYE_LOWER)):
        closed[up, 1] = closed[lo, 1]  # upper lid down onto the lower lid
    assert fm.eye_aspect_ratio(closed) < 0.3 * fm.eye_aspect_ratio(lm)
    opened = lm.copy()
    opened[fm.LOWER_LIP_INNER, 1] += 0.02
    assert fm.mouth_openness(opened) > fm.mouth_openness(lm) + 0.25


def test_metrics_reject_bad_shape():
    with pytest.raises(ValueError, match="478"):
        fm.eye_aspect_ratio(np.zeros((68, 2)))
    with pytest.raises(ValueError, match="mouth_openness"):
        fm.mouth_openness(np.zeros((478, 4)))
