"""The capture pipeline: named, idempotent stages with markers.

    probe -> frames -> audio -> faces -> landmarks -> tracking -> masks -> background -> split -> write

Intermediate results live in OUT/.capture/; each stage writes its outputs, then its marker
OUT/.capture/stages/STAGE.json holding a hash of the options it depends on and of its inputs'
markers. A rerun skips stages whose marker matches; an interrupted stage has no marker and reruns;
changing an option reruns that stage and everything downstream of it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from avatar.data.writer import atomic_write_json

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


def select_stages(only: Sequence[str] = (), skip: Sequence[str] = (), from_: Optional[str] = None):
    """-> (stages to consider in order, stages to force)."""
    for name in list(only) + list(skip) + ([from_] if from_ else []):
        if name not in STAGES:
            raise CaptureError(f"unknown stage {name!r}; stages are: {', '.join(STAGES)}")
    sel = list(only) if only else list(STAGES)
    forced = set(only)
    if from_:
        k = STAGES.index(from_)
        sel = [s for s in sel if STAGES.index(s) >= k]
        forced |= set(STAGES[k:])
    sel = [s for s in STAGES if s in sel and s not in set(skip)]
    return sel, forced


def run(ctx: Context, only: Sequence[str] = (), skip: Sequence[str] = (), from_: Optional[str] = None,
        overwrite: bool = False) -> Dict[str, str]:
    """Run the pipeline; returns {stage: "ran" | "skipped (done)" | "not selected"}."""
    from . import stages as S

    ctx.work.mkdir(parents=True, exist_ok=True)
    (ctx.work / "stages").mkdir(exist_ok=True)
    sel, forced = select_stages(only, skip, from_)
    status = {s: "not selected" for s in STAGES}
    for stage in sel:
        if not overwrite and stage not in forced and ctx.done(stage):
            status[stage] = "skipped (done)"
            ctx.log(f"[capture] {stage}: done already (skipped)")
            continue
        for d in DEPS[stage]:
            if not ctx.done(d) and d not in sel:
                raise CaptureError(f"stage '{stage}' needs stage '{d}', which has not run with these options "
                                   f"(marker {ctx.marker_path(d)}); run it too")
        marker = ctx.marker_path(stage)
        if marker.exists():
            marker.unlink()  # invalid until this run finishes
        ctx.warnings = []
        t0, c0 = time.perf_counter(), time.process_time()
        info = getattr(S, f"stage_{stage}")(ctx) or {}
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        atomic_write_json(marker, {"stage": stage, "hash": ctx.stage_hash(stage), "seconds": round(dt, 3),
                                   "cpu_seconds": round(dc, 3),
                                   "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                   "warnings": ctx.warnings, "info": info})
        status[stage] = "ran"
        ctx.log(f"[capture] {stage}: {dt:.2f} s")
    return status


def config_dict(cfg: CaptureConfig) -> Dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
