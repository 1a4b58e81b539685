import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see avatar/__init__.py
from pathlib import Path

import pytest


def _find_media() -> Path:
    """Real test media: $AVATAR_MEDIA, else ../shared/media beside the checkout (this workplace keeps
    it at /work/shared/media, which also serves clones made elsewhere, e.g. by CI)."""
    candidates = [os.environ.get("AVATAR_MEDIA"),
                  Path(__file__).resolve().parents[1].parent / "shared" / "media",
                  "/work/shared/media"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return Path(candidates[1])


MEDIA = _find_media()


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def media() -> Path:
    """../shared/media (real test media); tests using it skip when it is absent."""
    if not MEDIA.is_dir():
        pytest.skip(f"real test media not found at {MEDIA}")
    return MEDIA
