"""The capture-folder schema: file names, mask labels, version, and the error type of `avatar.data`.

A capture folder (written by `avatar capture`, read only through `avatar.data.load_capture`):

    transforms.json   nerfstudio-compatible; per-frame file_path, mask_path, transform_matrix
                      (camera-to-world, OpenGL axes), fl_x/fl_y/cx/cy/w/h; our fields under "avatar"
    images/NNNNNN.png (or .jpg)   RGB frames at the stored size
    masks/NNNNNN.png  uint8 label PNG (LABELS below)
    background.png    background plate at the stored size
    audio.wav         16 kHz mono 16-bit PCM (absent when captured with --allow-no-audio)
    tracks.npz        per-frame tracks (TRACK_SHAPES below)
    report/           contact sheet, plots, summary.json (for people; never read back)

The world frame is the head frame (docs/architecture.md): transform_matrix of frame i is the camera pose in the
head frame, i.e. tracks["head_pose"][i] converted to OpenGL axes.
"""
from __future__ import annotations

from typing import Dict, Tuple

NUM_LANDMARKS = 478
"""Face landmarks per frame (mediapipe face-mesh topology with refined eyes/lips; avatar.data.face_model)."""

SCHEMA_VERSION = 1
"""Version of the "avatar" block in transforms.json; bumped on any incompatible change."""

LABELS: Dict[str, int] = {
    "background": 0,
    "head": 1,      # hair / head: person above the neck that is not face skin
    "face": 2,      # face skin (inside the face oval, outside the mouth interior)
    "mouth": 3,     # mouth interior (inside the inner lip contour)
    "torso": 4,     # neck and torso (person below the jaw)
}
LABEL_NAMES: Dict[int, str] = {v: k for k, v in LABELS.items()}

TRANSFORMS = "transforms.json"
IMAGES_DIR = "images"
MASKS_DIR = "masks"
BACKGROUND = "background.png"
AUDIO = "audio.wav"
TRACKS = "tracks.npz"
REPORT_DIR = "report"

# Which capture stage produces each file (named in every DatasetError so the user knows what to rerun).
STAGE_OF: Dict[str, str] = {
    TRANSFORMS: "write",
    IMAGES_DIR: "frames",
    MASKS_DIR: "masks",
    BACKGROUND: "background",
    AUDIO: "audio",
    TRACKS: "tracking",
    "split": "split",
}

# Required arrays of tracks.npz: name -> shape with F = number of frames (None = any size).
TRACK_SHAPES: Dict[str, Tuple] = {
    "landmarks2d": ("F", NUM_LANDMARKS, 2),   # pixels in the stored image, pixel centres at +0.5
    "landmarks3d": ("F", NUM_LANDMARKS, 3),   # head frame, head pose removed, metres
    "motion": ("F", None),           # motion codes (avatar.data.motion.MotionSpace)
    "blink": ("F",),                 # [0, 1], 1 = closed
    "mouth_open": ("F",),            # inner-lip gap / mouth width (face_model.mouth_openness)
    "head_pose": ("F", 4, 4),        # camera-to-head, OpenCV axes
}


class DatasetError(Exception):
    """A capture folder is missing a file or is inconsistent. The message names the file and the
    capture stage that makes it."""

    def __init__(self, message: str, path=None, stage: str | None = None):
        self.path = path
        self.stage = stage
        parts = [message]
        if path is not None:
            parts.insert(0, f"{path}:")
        if stage is not None:
            parts.append(f"(made by the capture stage '{stage}'; rerun `avatar capture ... --from {stage}`)")
        super().__init__(" ".join(parts))
