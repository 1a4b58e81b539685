"""avatar.synth.head: a Gaussian head whose jaw and eyelids follow mouth_open / blink."""
import numpy as np
import pytest
import torch

from avatar.data import face_model as fm
from avatar.synth.head import HeadStyle, deformed_landmarks, procedural_head

FAST = HeadStyle(spacing=0.005)


def test_gaussian_fields_shapes_and_ranges():
    g0 = procedural_head(0.0, 0.0, FAST)
    g1 = procedural_head(1.0, 1.0, FAST)
    n = g0["means"].shape[0]
    assert 3000 < n < 20000
    shapes = {"means": (n, 3), "quats": (n, 4), "scales": (n, 3), "opacities": (n,), "colors": (n, 3),
              "labels": (n,)}
    for k, s in shapes.items():
        assert tuple(g0[k].shape) == s and tuple(g1[k].shape) == s, k
    assert g0["labels"].dtype == torch.int64 and g0["means"].dtype == torch.float32
    assert set(g0["labels"].unique().tolist()) == {1, 2, 3, 4}
    torch.testing.assert_close(g0["quats"].norm(dim=1), torch.ones(n), atol=1e-5, rtol=0)
    assert (g0["scales"] > 0).all() and (g0["scales"] < 0.03).all()
    assert ((g0["opacities"] > 0) & (g0["opacities"] <= 1)).all()
    assert ((g0["colors"] >= 0) & (g0["colors"] <= 1)).all()
    assert torch.isfinite(g1["means"]).all()
    # deterministic
    for k, v in procedural_head(0.0, 0.0, FAST).items():
        assert torch.equal(v, g0[k]), k
    # the head occupies a head-sized box around the origin; the face in front (negative z)
    head = g0["means"][g0["labels"] <= 3]
    assert (head.min(0).values > torch.tensor([-0.1, -0.16, -0.12])).all()
    assert (head.max(0).values < torch.tensor([0.1, 0.12, 0.13])).all()
    assert g0["means"][g0["labels"] == 2][:, 2].mean() < -0.05


def test_mouth_opens_with_mouth_open_and_only_the_lower_face_moves():
    lms = [deformed_landmarks(m, 0.0, FAST) for m in np.linspace(0, 1, 6)]
    mo = [float(fm.mouth_openness(lm)) for lm in lms]
    assert mo[0] < 0.03                       # closed lips at 0
    assert mo[-1] > 0.25                      # ~2 cm gap over a ~6 cm mouth at 1
    assert all(b > a + 0.02 for a, b in zip(mo, mo[1:]))  # strictly increasing
    up = np.concatenate([fm.LEFT_EYE, fm.RIGHT_EYE, fm.NOSE, fm.LEFT_BROW, [fm.FOREHEAD]])
    np.testing.assert_allclose(lms[-1][up], lms[0][up], atol=1e-6)
    assert lms[-1][fm.CHIN, 1] - lms[0][fm.CHIN, 1] > 0.015    # the chin drops
    assert lms[0].dtype == np.float32 and lms[0].shape == (478, 3)


def test_blink_closes_the_eyes():
    ears = [float(fm.eye_aspect_ratio(deformed_landmarks(0.2, b, FAST))) for b in (0.0, 0.5, 1.0)]
    assert ears[0] > 0.2 and ears[2] < 0.05 and ears[0] > ears[1] > ears[2]
    a, b = deformed_landmarks(0.2, 0.0, FAST), deformed_landmarks(0.2, 1.0, FAST)
    np.testing.assert_allclose(a[fm.LIPS_OUTER], b[fm.LIPS_OUTER], atol=1e-7)


def test_gaussians_follow_the_landmarks():
    """Face Gaussians near the lower lip / chin move with those landmarks (consistency)."""
    g0, g1 = procedural_head(0.0, 0.0, FAST), procedural_head(1.0, 0.0, FAST)
    l0, l1 = deformed_landmarks(0.0, 0.0, FAST), deformed_landmarks(1.0, 0.0, FAST)
    for idx in (17, fm.CHIN, 1, 159):
        d = (g0["means"] - torch.from_numpy(l0[idx])).norm(dim=1)
        near = (d < 0.005) & (g0["labels"] == 2)
        assert near.sum() >= 2, idx
        moved = (g1["means"][near] - g0["means"][near]).mean(0).numpy()
        np.testing.assert_allclose(moved, l1[idx] - l0[idx], atol=1.5e-3)


def test_styles_change_shape_and_motion():
    wide = HeadStyle(spacing=0.005, head_scale=(1.1, 1.0, 1.0))
    la, lb = deformed_landmarks(0, 0, FAST), deformed_landmarks(0, 0, wide)
    w_a, w_b = np.ptp(la[fm.FACE_OVAL, 0]), np.ptp(lb[fm.FACE_OVAL, 0])
    assert w_b / w_a == pytest.approx(1.1, rel=1e-4)
    big = HeadStyle(spacing=0.005, mouth_amplitude=1.5)
    assert fm.mouth_openness(deformed_landmarks(0.5, 0, big)) > 1.3 * fm.mouth_openness(deformed_landmarks(0.5, 0, FAST))
    asym = HeadStyle(spacing=0.005, mouth_asymmetry=0.5)
    lm = deformed_landmarks(0.8, 0, asym)
    gap_left = lm[317, 1] - lm[312, 1]     # subject's left (+x)
    gap_right = lm[87, 1] - lm[82, 1]
    assert gap_left > 1.2 * gap_right
    g = procedural_head(0, 0, HeadStyle(spacing=0.005, skin=(0.4, 0.3, 0.2)))
    g0 = procedural_head(0, 0, FAST)
    face = g0["labels"] == 2
    assert g["colors"][face].mean() < g0["colors"][face].mean() - 0.15


def test_bad_arguments():
    with pytest.raises(ValueError, match="mouth_open"):
        procedural_head(1.5, 0.0, FAST)
    with pytest.raises(ValueError, match="blink"):
        deformed_landmarks(0.0, float("nan"), FAST)
    with pytest.raises(ValueError, match="spacing"):
        procedural_head(0.0, 0.0, HeadStyle(spacing=0.0))
    with pytest.raises(ValueError, match="HeadStyle"):
        procedural_head(0.0, 0.0, style={"skin": (1, 1, 1)})


def test_renders_a_head_with_a_mouth_that_opens():
    from avatar.ops import rasterize

    W = H = 96
    V = torch.eye(4)[None]
    V[0, 2, 3] = 0.35                                        # frontal camera, 35 cm
    K = torch.tensor([[[220.0, 0, W / 2], [0, 220.0, H / 2], [0, 0, 1]]])
    areas = []
    for m in (0.0, 1.0):
        g = procedural_head(m, 0.0, FAST)
        onehot = torch.nn.functional.one_hot(g["labels"], 5).float()
        feats = torch.cat([g["colors"], onehot], 1)           # [N, 3 + 5]
        with torch.no_grad():
            img, alpha, _ = rasterize(g["means"], g["quats"], g["scales"], g["opacities"], feats, V, K,
                                      W, H, backend="auto")
        lab = img[0, ..., 3:].argmax(-1)
        lab[alpha[0, ..., 0] < 0.5] = 0
        assert alpha[0, H // 2, W // 2, 0] > 0.99                # solid face at the centre
        assert lab[H // 2, W // 2] == 2
        rgb = img[0, H // 2, W // 2, :3]
        assert rgb[0] > rgb[2] + 0.1                            # skin-ish (red > blue)
        areas.append(int((lab == 3).sum()))
        # projected landmarks: the inner-lip centre falls on mouth pixels when the mouth is open
        lm = torch.from_numpy(deformed_landmarks(m, 0.0, FAST))
        p = (K[0] @ (lm + V[0, :3, 3]).T).T
        uv = p[:, :2] / p[:, 2:]
        mid = (uv[13] + uv[14]) / 2
        if m == 1.0:
            assert lab[int(mid[1]), int(mid[0])] == 3
    assert areas[0] <= 2 and areas[1] > 20
