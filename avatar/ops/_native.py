"""Lazy loaders for the native extensions avatar._C_cpu / avatar._C_cuda.

Prebuilt modules (from `make setup` / setup.py) are used when importable; otherwise the same
sources are JIT-compiled with torch.utils.cpp_extension.load into a cache directory
($AVATAR_EXT_CACHE, default ~/.cache/avatar/ext). Nothing happens until first use, and each kind
is tried once per process: a failed build is remembered (`failure(kind)`) and not retried.
"""
from __future__ import annotations

import glob
import importlib
import importlib.util
import os
import threading
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from avatar.ops._errors import FIX, BackendUnavailable

CUDA_DIR = Path(__file__).resolve().parents[2] / "cuda"
ENTRY_POINTS = ("project_fwd", "project_bwd", "sh_fwd", "sh_bwd", "raster_fwd", "raster_bwd")


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
               if os.path.basename(h) != other] + glob.glob(str(CUDA_DIR / "csrc" / "*.h"))
    newest = max(os.path.getmtime(f) for f in srcs + headers)
    return newest > os.path.getmtime(spec.origin)


def _last_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[-1]}" if lines else type(e).__name__


def _cuda_home_hint() -> str:
    """Why a CUDA JIT link would fail: torch's CUDA_HOME guess without libcudart (it guesses
    /usr/local when only an nvcc wrapper is on PATH)."""
    from torch.utils.cpp_extension import CUDA_HOME
    if CUDA_HOME is None:
        return "; no CUDA toolkit found (set CUDA_HOME)"
    if not glob.glob(os.path.join(CUDA_HOME, "lib*", "libcudart.so*")) and \
            not glob.glob(os.path.join(CUDA_HOME, "targets", "*", "lib", "libcudart.so*")):
        return f"; CUDA_HOME={CUDA_HOME} has no libcudart (set CUDA_HOME to the toolkit, e.g. /usr/local/cuda)"
    return ""


def _jit(kind: str, srcs: List[str]):
    from torch.utils.cpp_extension import load as jit_load

    include = [str(CUDA_DIR / "include")]
    if kind == "cpu":
        return jit_load(name="avatar_C_cpu", sources=srcs, extra_include_paths=include,
                        extra_cflags=["-O3", "-fopenmp"], extra_ldflags=["-fopenmp"],
                        build_directory=_cache_dir(kind), verbose=False)
    return jit_load(name="avatar_C_cuda", sources=srcs, extra_include_paths=include,
                    extra_cflags=["-O3"], extra_cuda_cflags=["-O3", "--use_fast_math", "-lineinfo"],
                    build_directory=_cache_dir(kind), verbose=False)


def _load_once(kind: str) -> Tuple[Optional[object], str]:
    """(module, "") or (None, one-line reason)."""
    srcs = sources(kind)
    prebuilt_error = ""
    if not _prebuilt_is_stale(kind, srcs):
        try:
            return importlib.import_module(f"avatar._C_{kind}"), ""
        except ImportError as e:
            if importlib.util.find_spec(f"avatar._C_{kind}") is not None:   # built but unloadable
                prebuilt_error = _last_line(e)
    else:
        warnings.warn(f"avatar._C_{kind} is older than its sources in {CUDA_DIR}; using a JIT build "
                      f"of the current sources instead ({FIX} to refresh it)", stacklevel=5)
    if not srcs:
        why = (f"prebuilt avatar._C_{kind} does not load ({prebuilt_error})" if prebuilt_error
               else f"avatar._C_{kind} is not built and its sources are missing")
        return None, f"{why}; {FIX}"
    try:
        mod = _jit(kind, srcs)
    except Exception as e:  # noqa: BLE001 - compiler missing or failing: one clear line, remembered
        hint = _cuda_home_hint() if kind == "cuda" else ""
        return None, f"could not JIT-compile avatar._C_{kind} ({_last_line(e)}){hint}; {FIX}"
    missing = [n for n in ENTRY_POINTS if not hasattr(mod, n)]
    if missing:
        return None, f"the JIT-built avatar._C_{kind} lacks {missing}; {FIX}"
    return mod, ""


class _Loader:
    """Loads each kind at most once per process and remembers the outcome, failures included, so
    a failed JIT compile is not retried on every rasterize call."""

    def __init__(self):
        self._lock = threading.Lock()
        self._done: Dict[str, Tuple[Optional[object], str]] = {}

    def get(self, kind: str) -> Tuple[Optional[object], str]:
        with self._lock:
            if kind not in self._done:
                self._done[kind] = _load_once(kind)
            return self._done[kind]

    def failure(self, kind: str) -> Optional[str]:
        mod, why = self._done.get(kind, (True, ""))
        return why if mod is None else None


_LOADER = _Loader()


def load(kind: str):
    """The extension module for `kind` ("cpu" | "cuda"); raises BackendUnavailable with one line
    naming the fix (from the one remembered attempt)."""
    mod, why = _LOADER.get(kind)
    if mod is None:
        raise BackendUnavailable(why)
    return mod


def failure(kind: str) -> Optional[str]:
    """Why loading `kind` failed, if it was tried in this process and failed; else None."""
    return _LOADER.failure(kind)
