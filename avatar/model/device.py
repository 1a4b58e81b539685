"""Where the model runs: `device="auto"` is CUDA when a CUDA device is present, else the CPU."""
from __future__ import annotations

from typing import Tuple


def resolve_device(name: str = "auto") -> Tuple[str, str]:
    """"auto" | "cpu" | "cuda" | "cuda:N" -> (torch device string, why: a few words for the start-up line).
    Asking for CUDA without a CUDA device is a ValueError naming what is missing."""
    import torch

    n = str(name).strip().lower()
    has_cuda = torch.cuda.is_available()
    if n == "auto":
        if has_cuda:
            return "cuda", f"auto: {torch.cuda.get_device_name(0)}"
        return "cpu", "auto: no CUDA device" + ("" if torch.version.cuda else " (this torch is a CPU build)")
    if n == "cpu":
        return "cpu", "requested"
    if n.startswith("cuda"):
        if not has_cuda:
            raise ValueError(f"device {name!r}: no CUDA device is available here (torch {torch.__version__}); "
                             "use --device auto or cpu")
        return n, "requested"
    raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")
