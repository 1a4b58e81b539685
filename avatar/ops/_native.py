"""Lazy loaders for the native extensions avatar._C_cpu / avatar._C_cuda.

Prebuilt modules (from `make setup` / setup.py) are used when importable; otherwise the same
sources are JIT-compiled with torch.utils.cpp_extension.load into a cache directory
($AVATAR_EXT_CACHE, default ~/.cache/avatar/ext). Nothing happens until first use.
"""
from __future__ import annotations

import functools
import glob
import importlib
import importlib.util
import os
import warnings
from pathlib import Path
from typing import List

CUDA_DIR = Path(__file__).resolve().parents[2] / "cuda"
FIX = "run `make setup` (builds avatar._C_cpu, and avatar._C_cuda on a CUDA machine)"


def sources(kind: str) -> List[str]:
    """Source files of the `kind` ("cpu" | "cuda") extension, as setup.py lists them."""
    if kind == "cpu":
        files = sorted(glob.glob(str(CUDA_DIR / "csrc" / "cpu" / "*.cpp")))
        glue = CUDA_DIR / "csrc" / "bind_cpu.cpp"
    else:
        files = sorted(glob.glob(str(CUDA_DIR / "csrc" / "cuda" / "*.cu")))
        glue = CUDA_DIR / "csrc" / "bind_cuda.cpp"
    return files + [str(glue)] if files and glue.exists() else []


def _cache_dir(kind: str) -> str:
    root = os.environ.get("AVATAR_EXT_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "avatar", "ext"))
    path = os.path.join(root, kind)
    os.makedirs(path, exist_ok=True)
    return path


def _prebuilt_is_stale(kind: str, srcs: List[str]) -> bool:
    """True when a prebuilt avatar._C_<kind> exists but a native source or header is newer."""
    try:
        spec = importlib.util.find_spec(f"avatar._C_{kind}")
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.origin or not srcs:
        return False
    other = "cuda.h" if kind == "cpu" else "cpu.h"        # the other build's entry-point header
    headers = [h for h in glob.glob(str(CUDA_DIR / "include" / "avatar" / "*.h"))
               if os.path.basename(h) != other]
    newest = max(os.path.getmtime(f) for f in srcs + headers)
    return newest > os.path.getmtime(spec.origin)


@functools.lru_cache(maxsize=None)
def load(kind: str):
    """The extension module for `kind`; raises BackendUnavailable naming the fix."""
    from avatar.ops._backends import BackendUnavailable

    srcs = sources(kind)
    stale = _prebuilt_is_stale(kind, srcs)
    if not stale:
        try:
            return importlib.import_module(f"avatar._C_{kind}")
        except ImportError:
            pass
    else:
        warnings.warn(f"avatar._C_{kind} is older than its sources in {CUDA_DIR}; using a JIT build "
                      f"of the current sources instead ({FIX} to refresh it)", stacklevel=3)
    if not srcs:
        raise BackendUnavailable(f"avatar._C_{kind} is not built and its sources are missing; {FIX}")
    from torch.utils.cpp_extension import load as jit_load

    include = [str(CUDA_DIR / "include")]
    try:
        if kind == "cpu":
            return jit_load(name="avatar_C_cpu", sources=srcs, extra_include_paths=include,
                            extra_cflags=["-O3", "-fopenmp", "-std=c++17"],
                            extra_ldflags=["-fopenmp"], build_directory=_cache_dir(kind),
                            verbose=False)
        return jit_load(name="avatar_C_cuda", sources=srcs, extra_include_paths=include,
                        extra_cflags=["-O3", "-std=c++17"],
                        extra_cuda_cflags=["-O3", "--use_fast_math", "-std=c++17"],
                        build_directory=_cache_dir(kind), verbose=False)
    except Exception as e:  # compiler missing or failing: one clear message
        raise BackendUnavailable(f"could not JIT-compile avatar._C_{kind} ({type(e).__name__}: "
                                 f"{str(e).strip().splitlines()[-1] if str(e).strip() else ''}); {FIX}") from e
