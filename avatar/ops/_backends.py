"""Backend registry: availability (with reasons), `auto` resolution and lazy loading.

Nothing here compiles or loads a native module at import; `backends()` only probes cheaply
(imports of prebuilt modules, tool lookups) and `ops(name)` loads on first use.
"""
from __future__ import annotations

import importlib
import importlib.util
import shutil
import warnings
from typing import Dict, Tuple

import torch

NAMES = ("cuda", "gsplat", "cpu", "torch")
FIX = "run `make setup` (builds avatar._C_cpu, and avatar._C_cuda on a CUDA machine)"


class BackendUnavailable(RuntimeError):
    """An explicitly requested rasterizer backend cannot be used here."""


def _prebuilt(mod: str) -> bool:
    try:
        return importlib.util.find_spec(mod) is not None
    except (ImportError, ValueError):
        return False


def _cpu_status() -> Tuple[bool, str]:
    if _prebuilt("avatar._C_cpu"):
        return True, "prebuilt avatar._C_cpu"
    from avatar.ops import _native
    if not _native.sources("cpu"):
        return False, f"no native sources found under {_native.CUDA_DIR} (not a source checkout); {FIX}"
    if shutil.which("c++") or shutil.which("g++"):
        return True, f"avatar._C_cpu not prebuilt: JIT-compiled on first use (or {FIX})"
    return False, f"avatar._C_cpu not built and no C++ compiler for the JIT fallback; {FIX}"


def _cuda_status() -> Tuple[bool, str]:
    if torch.version.cuda is None:
        return False, "torch is a CPU-only build"
    if not torch.cuda.is_available():
        return False, "no CUDA device visible (torch.cuda.is_available() is False)"
    if _prebuilt("avatar._C_cuda"):
        return True, "prebuilt avatar._C_cuda"
    from torch.utils.cpp_extension import CUDA_HOME
    if CUDA_HOME is not None:
        return True, f"avatar._C_cuda not prebuilt: JIT-compiled on first use (or {FIX})"
    return False, f"avatar._C_cuda not built and no CUDA toolkit found; {FIX}"


def _gsplat_status() -> Tuple[bool, str]:
    if importlib.util.find_spec("gsplat") is None:
        return False, "gsplat is not installed (pip install gsplat)"
    if not torch.cuda.is_available():
        return False, "gsplat needs a CUDA device (torch.cuda.is_available() is False)"
    return True, "gsplat.rasterization"


def backends() -> Dict[str, Tuple[bool, str]]:
    """name -> (available, reason) for "cuda", "gsplat", "cpu", "torch"."""
    return {"cuda": _cuda_status(), "gsplat": _gsplat_status(), "cpu": _cpu_status(),
            "torch": (True, "pure PyTorch reference (any device, autograd)")}


def resolve(backend: str, like: torch.Tensor, camera_grad: bool = False) -> str:
    """Pick the backend for tensors like `like`: `auto` = cuda -> gsplat -> cpu -> torch among
    those that can run on its device and dtype (native backends compute in float32).
    camera_grad: Ks require gradients, which only the torch reference provides."""
    if backend not in NAMES + ("auto",):
        raise ValueError(f"rasterize: `backend` must be one of {('auto',) + NAMES}, got {backend!r}")
    if camera_grad and torch.is_grad_enabled():
        if backend not in ("auto", "torch"):
            raise ValueError(f"rasterize: `Ks` requires grad, but backend {backend!r} does not "
                             "differentiate w.r.t. intrinsics; use backend='torch' or detach it")
        if backend == "auto":
            warnings.warn("rasterize: Ks requires grad -> using the (slow) torch reference backend, "
                          "the only one that differentiates w.r.t. intrinsics; detach Ks to use a native "
                          "backend", stacklevel=3)
            return "torch"
    on_cuda = like.device.type == "cuda"
    f32 = like.dtype == torch.float32
    usable = {"cuda": on_cuda and f32, "gsplat": on_cuda and f32,
              "cpu": like.device.type == "cpu" and f32, "torch": True}
    if backend == "auto":
        for name in NAMES:
            if usable[name] and _status(name)[0]:
                return name
        return "torch"
    if not usable[backend]:
        where = "CUDA tensors" if backend in ("cuda", "gsplat") else "CPU tensors"
        raise ValueError(f"rasterize: backend {backend!r} needs float32 {where}; got "
                         f"{like.dtype} on {like.device}")
    ok, why = _status(backend)
    if not ok:
        raise BackendUnavailable(f"rasterize backend {backend!r} is unavailable: {why}")
    return backend


def _status(name: str) -> Tuple[bool, str]:
    return {"cuda": _cuda_status, "gsplat": _gsplat_status, "cpu": _cpu_status,
            "torch": lambda: (True, "")}[name]()


def ops(name: str):
    """The object implementing project / sh_colors / rasterize_pixels for a tiled backend."""
    if name == "torch":
        return importlib.import_module("avatar.ops._torch_impl")
    from avatar.ops._ext import Ops
    return Ops(name)
