"""The capture pipeline's error type."""
from __future__ import annotations


class CaptureError(ValueError):
    """Input that cannot become a dataset (the message names the file/argument and what was expected)."""
