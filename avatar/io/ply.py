"""Standard 3D Gaussian Splatting .ply files (the layout common splat viewers read).

Vertex properties, float32, in this order:
  x y z  nx ny nz (zeros)  f_dc_0..2  f_rest_0..(3*(K-1)-1)  opacity  scale_0..2  rot_0..3
with opacity as a logit, scales as logs, rot as a quaternion wxyz, and the higher-order SH
coefficients stored channel-major (f_rest index = channel * (K-1) + (k-1)), as the 3DGS reference
exports them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from typing import Dict

from avatar.io.atomic import atomic_path


class PlyError(ValueError):
    """A .ply file is missing, unreadable or not a 3DGS splat file (message names file and field)."""


@dataclass
class SplatData:
    """Gaussians in storage parametrisation (what the .ply holds)."""
    means: np.ndarray           # [N, 3] float32
    quats: np.ndarray           # [N, 4] wxyz (not necessarily normalised)
    log_scales: np.ndarray      # [N, 3]
    opacity_logits: np.ndarray  # [N]
    sh: np.ndarray              # [N, K, 3], K = (degree+1)^2, sh[:, 0] = DC

    @property
    def sh_degree(self) -> int:
        return int(round(np.sqrt(self.sh.shape[1]))) - 1

    def __post_init__(self) -> None:
        n = self.means.shape[0] if self.means.ndim == 2 else -1
        checks = {"means": (self.means, (n, 3)), "quats": (self.quats, (n, 4)),
                  "log_scales": (self.log_scales, (n, 3)), "opacity_logits": (self.opacity_logits, (n,))}
        for name, (arr, shape) in checks.items():
            if arr.shape != shape:
                raise ValueError(f"SplatData.{name} must have shape {list(shape)}, got {list(arr.shape)}")
        K = self.sh.shape[1] if self.sh.ndim == 3 else 0
        if self.sh.ndim != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3 or K not in (1, 4, 9, 16):
            raise ValueError(f"SplatData.sh must have shape [{n}, K, 3] with K in 1, 4, 9, 16, "
                             f"got {list(self.sh.shape)}")


def _names(K: int):
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(3 * (K - 1))]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def write_ply(path: Union[str, Path], data: SplatData) -> None:
    """Write binary little-endian 3DGS .ply atomically (avatar.io.atomic)."""
    from plyfile import PlyData, PlyElement

    path = Path(path)
    N, K = data.means.shape[0], data.sh.shape[1]
    rest = np.ascontiguousarray(data.sh[:, 1:, :].transpose(0, 2, 1)).reshape(N, 3 * (K - 1))
    cols = np.concatenate([
        data.means, np.zeros((N, 3), np.float32), data.sh[:, 0, :], rest,
        data.opacity_logits[:, None], data.log_scales, data.quats], axis=1).astype(np.float32)
    names = _names(K)
    rec = np.empty(N, dtype=[(n, "f4") for n in names])
    for i, n in enumerate(names):
        rec[n] = cols[:, i]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        PlyData([PlyElement.describe(rec, "vertex")], text=False).write(f)


def read_ply(path: Union[str, Path]) -> SplatData:
    """Read a 3DGS .ply (binary or ascii). Raises PlyError naming the file and missing field."""
    from plyfile import PlyData

    path = Path(path)
    if not path.is_file():
        raise PlyError(f"{path}: no such file")
    try:
        ply = PlyData.read(str(path))
    except Exception as e:  # plyfile raises several types for corrupt files
        raise PlyError(f"{path}: not a readable .ply file ({type(e).__name__}: {e})") from e
    if "vertex" not in [el.name for el in ply.elements]:
        raise PlyError(f"{path}: no 'vertex' element")
    v = ply["vertex"]
    props = {p.name for p in v.properties}
    n_rest = len([p for p in props if p.startswith("f_rest_")])
    if n_rest % 3 or (n_rest // 3 + 1) not in (1, 4, 9, 16):
        raise PlyError(f"{path}: {n_rest} f_rest_* properties; expected 0, 9, 24 or 45 (SH degree 0-3)")
    K = n_rest // 3 + 1
    need = [n for n in _names(K) if n not in ("nx", "ny", "nz")]
    missing = [n for n in need if n not in props]
    if missing:
        raise PlyError(f"{path}: vertex property {missing[0]!r} missing (not a 3DGS splat file?)")
    col = lambda n: np.asarray(v[n], dtype=np.float32)
    N = len(v.data)
    rest = np.stack([col(f"f_rest_{i}") for i in range(3 * (K - 1))], 1) if K > 1 else np.zeros((N, 0), np.float32)
    sh = np.concatenate([np.stack([col(f"f_dc_{c}") for c in range(3)], 1)[:, None, :],
                         rest.reshape(N, 3, K - 1).transpose(0, 2, 1)], axis=1)
    return SplatData(
        means=np.stack([col(a) for a in "xyz"], 1),
        quats=np.stack([col(f"rot_{i}") for i in range(4)], 1),
        log_scales=np.stack([col(f"scale_{i}") for i in range(3)], 1),
        opacity_logits=col("opacity"),
        sh=np.ascontiguousarray(sh),
    )


SH_C0 = 0.28209479177387814


def to_splat(g: Dict[str, np.ndarray], sh_degree: int = 3):
    """Activated Gaussians (means, quats, scales, opacities, colors RGB) -> avatar.io.ply.SplatData in the
    reference 3DGS layout: SH degree `sh_degree` (3: f_rest_0..44, what common splat viewers expect), the
    higher-order slots zero-filled (the avatar's colours are view-independent RGB: DC only)."""
    from avatar.io.ply import SplatData

    q = np.asarray(g["quats"], np.float32)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    op = np.clip(np.asarray(g["opacities"], np.float64), 1e-6, 1 - 1e-6)
    rgb = np.asarray(g["colors"], np.float32)
    return SplatData(means=np.asarray(g["means"], np.float32), quats=q.astype(np.float32),
                     log_scales=np.log(np.maximum(np.asarray(g["scales"], np.float64), 1e-12)).astype(np.float32),
                     opacity_logits=np.log(op / (1 - op)).astype(np.float32),
                     sh=_pad_sh(((rgb - 0.5) / SH_C0).astype(np.float32)[:, None, :], sh_degree))


def _pad_sh(sh: np.ndarray, degree: int) -> np.ndarray:
    """[N, K, 3] -> [N, (degree+1)^2, 3], the extra coefficients zero."""
    K = (int(degree) + 1) ** 2
    if sh.shape[1] >= K:
        return sh
    out = np.zeros((sh.shape[0], K, 3), np.float32)
    out[:, :sh.shape[1]] = sh
    return out
