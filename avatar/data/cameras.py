"""Camera conventions, written once: OpenCV <-> OpenGL axes, camera-to-world <-> viewmat.

Inside the project cameras are OpenCV (x right, y down, z forward) and `viewmat` is world-to-camera.
nerfstudio's transforms.json stores camera-to-world in OpenGL axes (x right, y up, z backward); this
module is the only place that converts between the two.
"""
from __future__ import annotations

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
