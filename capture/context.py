"""The capture run's context: the stage table (STAGES, DEPS: which stages each needs, FIELDS: which
options each depends on), `Context` (inputs, output folder, options, stage markers) and config_dict.
Kept apart from capture.pipeline so stages and the report import it without a circle."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from .config import CaptureConfig
from .errors import CaptureError

STAGES = ("probe", "frames", "audio", "faces", "landmarks", "tracking", "masks", "background", "split", "write")


# upstream stages and the config fields each stage depends on
DEPS: Dict[str, Sequence[str]] = {
    "probe": (), "frames": ("probe",), "audio": ("probe",), "faces": ("frames",), "landmarks": ("faces",),
    "tracking": ("landmarks",), "masks": ("landmarks",), "background": ("masks",), "split": ("landmarks",),
    "write": ("tracking", "masks", "background", "split", "audio"),
}


FIELDS: Dict[str, Sequence[str]] = {
    "probe": ("fps", "work_max_size", "allow_no_audio"),
    "frames": ("work_format", "raw_max_gb"),
    "audio": ("max_av_offset_s",),
    "faces": ("backend", "known_landmarks", "max_faces", "min_detection_confidence"),
    "landmarks": ("min_seconds", "long_loss_s"),
    "tracking": ("focal", "pose_smooth_sigma", "blink_closed_ratio", "crop_mode", "crop_scale", "crop_smooth_s",
                 "size"),
    "masks": ("seg_threshold",),
    "background": ("background_frames",),
    "split": ("holdout_fraction",),
    "write": ("size", "image_format", "png_compression", "jpeg_quality", "report"),
}


class Context:
    """State passed to every stage: inputs, options, folders, a log function and the warnings list."""

    def __init__(self, inputs: Sequence[Path], out: Path, cfg: CaptureConfig, rig: Optional[Path] = None,
                 log: Callable[[str], None] = print):
        self.inputs = [Path(p) for p in inputs]
        self.out = Path(out)
        self.work = self.out / ".capture"
        self.cfg = cfg
        self.rig = Path(rig) if rig else None
        self.log = log
        self.warnings: List[str] = []
        self.info: Dict = {}
        self.owned = None  # avatar.io.outdir.OwnedDir of the output folder (claimed by capture.pipeline.run)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        self.log(f"[capture] WARNING: {msg}")

    def marker_path(self, stage: str) -> Path:
        return self.work / "stages" / f"{stage}.json"

    def read_marker(self, stage: str) -> Optional[Dict]:
        p = self.marker_path(stage)
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except ValueError:
            return None

    def stage_hash(self, stage: str) -> str:
        def _val(v):
            return str(v) if isinstance(v, Path) else v

        key = {"stage": stage, "version": 1,
               "options": {f: _val(getattr(self.cfg, f)) for f in FIELDS[stage]},
               "deps": {d: self.stage_hash(d) for d in DEPS[stage]}}
        if stage == "probe":
            key["inputs"] = [_file_key(p) for p in self.inputs]
            key["rig"] = _file_key(self.rig) if self.rig else None
        return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    def done(self, stage: str) -> bool:
        m = self.read_marker(stage)
        return m is not None and m.get("hash") == self.stage_hash(stage)

    def stage_info(self, stage: str) -> Dict:
        """The info dict a finished stage recorded in its marker."""
        m = self.read_marker(stage)
        if m is None:
            raise CaptureError(f"{self.marker_path(stage)}: stage '{stage}' has not run; run it (drop --skip/--only)")
        return m.get("info", {})


def _file_key(p: Path):
    p = Path(p)
    if p.is_file():
        st = p.stat()
        return [str(p.resolve()), st.st_size, int(st.st_mtime)]
    if p.is_dir():
        files = sorted(x for x in p.iterdir() if x.is_file())
        return [str(p.resolve()), len(files), max((int(x.stat().st_mtime) for x in files), default=0)]
    return [str(p), None]


def config_dict(cfg: CaptureConfig) -> Dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
