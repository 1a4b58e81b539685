"""avatar.data: the capture-folder schema and its one reader/writer, face model and motion codes.

    ds = avatar.data.load_capture(path)    # CaptureDataset; raises DatasetError
    with avatar.data.CaptureWriter(path, fps=25) as w: ...

Importing this package loads no OpenCV/torch (image I/O imports cv2 on first use).
"""
from .dataset import Capture, CaptureDataset, load_capture
from .motion import MotionSpace
from .schema import LABELS, SCHEMA_VERSION, DatasetError
from .writer import CaptureWriter, default_split

__all__ = ["Capture", "CaptureDataset", "CaptureWriter", "DatasetError", "LABELS", "MotionSpace",
           "SCHEMA_VERSION", "default_split", "load_capture"]
