"""The error a missing rasterizer backend raises and the fix it names. Kept apart so the loader
(_native) and the registry (_backends) both import it, not each other."""

FIX = "run `make setup` (builds avatar._C_cpu, and avatar._C_cuda on a CUDA machine)"


class BackendUnavailable(RuntimeError):
    """An explicitly requested rasterizer backend cannot be used here."""
