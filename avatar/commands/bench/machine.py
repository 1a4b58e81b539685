"""What every benchmark JSON records about the machine and the software it ran on (one helper for
all `avatar bench` commands, so their "device" and "versions" blocks have the same fields)."""
from __future__ import annotations

import importlib
import os
import platform
from pathlib import Path
from typing import Any, Dict, Optional


def _cpu_model() -> Optional[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def load_average() -> Optional[list]:
    """[1, 5, 15]-minute load averages (None where the OS has none): a busy machine slows timings."""
    try:
        return list(os.getloadavg())
    except (AttributeError, OSError):
        return None


def device(kind: Optional[str] = None) -> Dict[str, Any]:
    """The "device" block: kind (the device the bench ran on: "cpu" / "cuda"; default cuda when
    torch sees one), CPU, cores, torch threads, GPU name (None without CUDA), load average now."""
    import torch

    cuda = torch.cuda.is_available()
    return {"kind": kind or ("cuda" if cuda else "cpu"), "platform": platform.platform(),
            "cpu": platform.processor() or platform.machine(), "cpu_model": _cpu_model(),
            "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if cuda else None, "load_average_1_5_15": load_average()}


def versions(*modules: str) -> Dict[str, Optional[str]]:
    """The "versions" block: python, torch, numpy and each named module's __version__ (None when
    it is not installed)."""
    out: Dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in ("torch", "numpy") + tuple(m for m in modules if m not in ("torch", "numpy")):
        try:
            out[name] = str(getattr(importlib.import_module(name), "__version__", "unknown"))
        except ImportError:
            out[name] = None
    return out
