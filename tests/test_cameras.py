"""avatar.data.cameras rotation helpers: one implementation for numpy arrays and torch tensors (wxyz)."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from avatar.data.cameras import look_at, quat_mul, quat_to_rotmat, rotmat_to_quat, slerp


def _random(n, seed=0):
    R = Rotation.random(n, random_state=seed)
    q = R.as_quat()[:, [3, 0, 1, 2]]  # scipy is xyzw
    return R.as_matrix(), q * np.where(q[:, :1] < 0, -1.0, 1.0)


def test_numpy_round_trip_and_wxyz_order():
    R, q = _random(500)
    qq = rotmat_to_quat(R)
    assert qq.shape == (500, 4) and qq.dtype == np.float64 and (qq[:, 0] >= 0).all()
    np.testing.assert_allclose(qq, q, atol=1e-12)                 # w-x-y-z, w >= 0
    np.testing.assert_allclose(quat_to_rotmat(qq), R, atol=1e-12)
    np.testing.assert_allclose(quat_to_rotmat(3.0 * qq), R, atol=1e-12)  # any norm
    # single rotation, and the four Shepperd branches (trace and each diagonal term largest)
    for Rz in (np.eye(3), np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1]), R[0]):
        np.testing.assert_allclose(quat_to_rotmat(rotmat_to_quat(Rz)), Rz, atol=1e-12)
    np.testing.assert_allclose(rotmat_to_quat(np.eye(3)), [1, 0, 0, 0])
    # x axis by 90 degrees: w = cos 45, x = sin 45
    np.testing.assert_allclose(rotmat_to_quat(Rotation.from_euler("x", 90, degrees=True).as_matrix()),
                               [np.sqrt(0.5), np.sqrt(0.5), 0, 0], atol=1e-12)


def test_quat_mul_composes_rotations():
    R, q = _random(200, 1)
    R2, q2 = _random(200, 2)
    np.testing.assert_allclose(quat_to_rotmat(quat_mul(q, q2)), R @ R2, atol=1e-12)


def test_torch_matches_numpy_in_float32():
    torch = pytest.importorskip("torch")
    R, q = _random(500, 3)
    Rt = torch.tensor(R, dtype=torch.float32)
    qt = rotmat_to_quat(Rt)
    assert isinstance(qt, torch.Tensor) and qt.dtype == torch.float32 and qt.shape == (500, 4)
    np.testing.assert_allclose(qt.numpy(), q, atol=1e-6)
    back = quat_to_rotmat(qt)
    assert back.dtype == torch.float32 and back.shape == (500, 3, 3)
    np.testing.assert_allclose(back.numpy(), R, atol=1e-6)
    q2 = torch.tensor(_random(500, 4)[1], dtype=torch.float32)
    np.testing.assert_allclose(quat_mul(qt, q2).numpy(), quat_mul(q, q2.double().numpy()), atol=1e-6)
    # differentiable: gradients flow through quat_to_rotmat
    p = qt.clone().requires_grad_(True)
    quat_to_rotmat(p).sum().backward()
    assert p.grad is not None and torch.isfinite(p.grad).all()
    # a zero quaternion is the identity (as the densification split expects), not NaN
    np.testing.assert_allclose(quat_to_rotmat(torch.zeros(4)).numpy(), np.eye(3))


def test_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, avatar.data.cameras; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_slerp_and_look_at():
    R, q = _random(2, 5)
    np.testing.assert_allclose(slerp(q[0], q[1], 0.0), q[0], atol=1e-12)
    np.testing.assert_allclose(quat_to_rotmat(slerp(q[0], -q[1], 1.0)), R[1], atol=1e-12)  # either sign
    V = look_at([0, 0, -0.6])
    np.testing.assert_allclose(V, [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0.6], [0, 0, 0, 1]], atol=1e-12)
    with pytest.raises(ValueError, match="equals its target"):
        look_at([0, 0, 0])
