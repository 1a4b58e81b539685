"""Backend registry: availability (with reasons), `auto` resolution and lazy loading.

Nothing here compiles or loads a native module at import; `backends()` only probes cheaply
(spec lookups of prebuilt modules, tool lookups, remembered load failures). `resolve("auto")` loads
the native backend it is about to pick, so a failed load (e.g. a JIT compile error) falls through to
the next backend with one warning instead of raising; `ops(name)` loads on first use.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import warnings
from typing import Dict, Tuple

import torch

from avatar.ops import _native
from avatar.ops._errors import FIX, BackendUnavailable

NAMES = ("cuda", "gsplat", "cpu", "torch")
NATIVE = ("cuda", "cpu")
__all__ = ["NAMES", "FIX", "BackendUnavailable", "backends", "resolve", "ops"]


def _prebuilt(mod: str) -> bool:
    try:
        return importlib.util.find_spec(mod) is not None
    except (ImportError, ValueError):
        return False


def _cpu_status() -> Tuple[bool, str]:
    failed = _native.failure("cpu")
    if failed:
        return False, failed
    if _prebuilt("avatar._C_cpu"):
        return True, "prebuilt avatar._C_cpu"
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
    failed = _native.failure("cuda")
    if failed:
        return False, failed
    if _prebuilt("avatar._C_cuda"):
        return True, "prebuilt avatar._C_cuda"
    from torch.utils.cpp_extension import CUDA_HOME
    if CUDA_HOME is not None:
        return True, f"avatar._C_cuda not prebuilt: JIT-compiled on first use (or {FIX})"
    return False, f"avatar._C_cuda not built and no CUDA toolkit found; {FIX}"


def _gsplat_status() -> Tuple[bool, str]:
    if os.environ.get("AVATAR_NO_GSPLAT") == "1":     # e.g. scripts/gpu-check.sh when its JIT is not ready
        return False, "disabled by AVATAR_NO_GSPLAT=1"
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
        return _auto(usable, on_cuda)
    if not usable[backend]:
        where = "CUDA tensors" if backend in ("cuda", "gsplat") else "CPU tensors"
        raise ValueError(f"rasterize: backend {backend!r} needs float32 {where}; got "
                         f"{like.dtype} on {like.device}")
    ok, why = _status(backend)
    if not ok:
        raise BackendUnavailable(f"rasterize backend {backend!r} is unavailable: {why}")
    return backend


def _auto(usable: Dict[str, bool], on_cuda: bool) -> str:
    """cuda -> gsplat -> cpu -> torch: the first usable one that loads. When our native backend for
    this device (cuda for CUDA tensors, cpu for CPU tensors) is skipped, one warning says why."""
    own = "cuda" if on_cuda else "cpu"
    skipped = None
    for name in NAMES:
        if not usable[name]:
            continue
        ok, why = _status(name)
        if ok and name in NATIVE:
            try:
                _native.load(name)           # loads (or JIT-builds) once; a failure is remembered
            except BackendUnavailable as e:
                ok, why = False, str(e)
        if ok:
            if skipped:
                warnings.warn(f"rasterize: backend {own!r} unavailable ({skipped}); using {name!r} instead",
                              stacklevel=4)
            return name
        if name == own:
            skipped = why
    return "torch"


def _status(name: str) -> Tuple[bool, str]:
    return {"cuda": _cuda_status, "gsplat": _gsplat_status, "cpu": _cpu_status,
            "torch": lambda: (True, "")}[name]()


def ops(name: str):
    """The object implementing project / sh_colors / rasterize_pixels for a tiled backend."""
    if name == "torch":
        return importlib.import_module("avatar.ops._torch_impl")
    from avatar.ops._ext import Ops   # noqa: PLC0415 - keeps `import avatar.ops` light
    return Ops(name)
