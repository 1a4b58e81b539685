"""Camera conventions, written once: OpenCV <-> OpenGL axes, camera-to-world <-> viewmat.

Inside the project cameras are OpenCV (x right, y down, z forward) and `viewmat` is world-to-camera.
nerfstudio's transforms.json stores camera-to-world in OpenGL axes (x right, y up, z backward); this
module is the only place that converts between the two.
"""
from __future__ import annotations

import math
import sys

import numpy as np

# Flip of the camera's y and z axes; its own inverse.
_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])


def c2w_opencv_to_opengl(c2w: np.ndarray) -> np.ndarray:
    """Camera-to-world [..., 4, 4] with OpenCV camera axes -> the same pose with OpenGL camera axes."""
    return np.asarray(c2w, np.float64) @ _FLIP


def c2w_opengl_to_opencv(c2w: np.ndarray) -> np.ndarray:
    """Camera-to-world [..., 4, 4] with OpenGL camera axes -> OpenCV camera axes."""
    return np.asarray(c2w, np.float64) @ _FLIP


def rigid_inverse(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms [..., 4, 4] (rotation + translation)."""
    T = np.asarray(T, np.float64)
    R = T[..., :3, :3]
    t = T[..., :3, 3:]
    out = np.zeros_like(T)
    Rt = np.swapaxes(R, -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    out[..., 3, 3] = 1.0
    return out


def viewmat_from_opengl_c2w(c2w_gl: np.ndarray) -> np.ndarray:
    """nerfstudio transform_matrix [..., 4, 4] (OpenGL camera-to-world) -> OpenCV world-to-camera."""
    return rigid_inverse(c2w_opengl_to_opencv(c2w_gl))


def opengl_c2w_from_viewmat(viewmat: np.ndarray) -> np.ndarray:
    """OpenCV world-to-camera [..., 4, 4] -> nerfstudio transform_matrix (OpenGL camera-to-world)."""
    return c2w_opencv_to_opengl(rigid_inverse(viewmat))


def intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """[3, 3] float64 pinhole matrix (pixels; pixel (i, j) centre at x = j + 0.5, y = i + 0.5)."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], np.float64)


def look_at(position, target=(0.0, 0.0, 0.0), down=(0.0, 1.0, 0.0)) -> np.ndarray:
    """World-to-camera [4, 4] float64 (OpenCV) of a camera at `position` looking at `target`; `down` is the
    world direction that should point down the image (+y), (0, 1, 0) in the head frame. ValueError when
    the position equals the target or `down` is parallel to the viewing direction."""
    c = np.asarray(position, np.float64)
    z = np.asarray(target, np.float64) - c
    if np.linalg.norm(z) < 1e-9:
        raise ValueError(f"look_at: camera position {list(c)} equals its target")
    z /= np.linalg.norm(z)
    x = np.cross(np.asarray(down, np.float64), z)
    if np.linalg.norm(x) < 1e-9:
        raise ValueError("look_at: the 'down' vector is parallel to the viewing direction")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    V = np.eye(4)
    V[:3, :3] = np.stack([x, y, z])                   # rows: camera axes in the world
    V[:3, 3] = -V[:3, :3] @ c
    return V


# ----------------------------------------------------------------------------- rotation helpers
# Quaternions are w-x-y-z, unit norm, w >= 0 where this module makes them. rotmat_to_quat, quat_to_rotmat and
# quat_mul take numpy arrays (-> float64) or torch tensors (-> the tensor's dtype and device, differentiable);
# torch is never imported here: a tensor argument means the caller already has it.
def _torch_of(a):
    """The torch module if `a` is a torch tensor, else None."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and isinstance(a, torch.Tensor) else None


def rotmat_to_quat(R):
    """Rotations [..., 3, 3] -> unit quaternions [..., 4] wxyz with w >= 0 (Shepperd's method: the branch of
    the largest quaternion component, so no division by a small number)."""
    torch = _torch_of(R)
    xp = torch if torch is not None else np
    m = R.double() if torch is not None else np.asarray(R, np.float64)
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    cands = xp.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    k = cands.argmax(-1)
    s = xp.sqrt(xp.clip(xp.amax(cands, -1), 1e-12, None)) * 2  # 4 |q_k|
    w = [m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]]
    xy, xz, yz = m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1]
    rows = [xp.stack([s / 4, w[0] / s, w[1] / s, w[2] / s], -1),
            xp.stack([w[0] / s, s / 4, xy / s, xz / s], -1),
            xp.stack([w[1] / s, xy / s, s / 4, yz / s], -1),
            xp.stack([w[2] / s, xz / s, yz / s, s / 4], -1)]
    q = rows[0]
    for j in range(1, 4):
        q = xp.where((k == j)[..., None], rows[j], q)
    q = q / xp.sqrt((q * q).sum(-1))[..., None]
    q = xp.where(q[..., :1] < 0, -q, q)
    return q.to(R.dtype) if torch is not None else q


def quat_to_rotmat(q):
    """Quaternions [..., 4] wxyz (any norm) -> rotations [..., 3, 3]."""
    torch = _torch_of(q)
    xp = torch if torch is not None else np
    if torch is None:
        q = np.asarray(q, np.float64)
    q = q / xp.clip(xp.sqrt((q * q).sum(-1)), 1e-12, None)[..., None]  # a zero quaternion -> identity
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return xp.stack([xp.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
                     xp.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
                     xp.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)], -2)


def quat_mul(a, b):
    """Hamilton product a * b of wxyz quaternions [..., 4] (the rotation b, then a); broadcasts."""
    torch = _torch_of(a)
    xp = torch if torch is not None else np
    if torch is None:
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    aw, ax, ay, az = a[..., 0], a[..., 1], a[..., 2], a[..., 3]
    bw, bx, by, bz = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return xp.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], -1)


def slerp(q0: np.ndarray, q1: np.ndarray, w: float) -> np.ndarray:
    """Spherical interpolation of unit quaternions [4] (shortest arc), w in [0, 1]."""
    q0 = np.asarray(q0, np.float64)
    q1 = np.asarray(q1, np.float64)
    d = float(np.dot(q0, q1))
    if d < 0:
        q1, d = -q1, -d
    if d > 0.9995:
        q = q0 + w * (q1 - q0)
        return q / np.linalg.norm(q)
    th = math.acos(min(1.0, d))
    return (math.sin((1 - w) * th) * q0 + math.sin(w * th) * q1) / math.sin(th)
