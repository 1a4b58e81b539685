"""The capture pipeline: named, idempotent stages with markers.

    probe -> frames -> audio -> faces -> landmarks -> tracking -> masks -> background -> split -> write

Intermediate results live in OUT/.capture/; each stage writes its outputs, then its marker
OUT/.capture/stages/STAGE.json holding a hash of the options it depends on and of its inputs'
markers. A rerun skips stages whose marker matches; an interrupted stage has no marker and reruns;
changing an option reruns that stage and everything downstream of it.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, Optional, Sequence

from avatar.io.atomic import atomic_write_json
from avatar.io.outdir import claim_dir
from capture.config import CaptureConfig, check_config
from capture.noise import native_noise_filtered
from capture.context import DEPS, STAGES, Context

from .errors import CaptureError


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

    sel, forced = select_stages(only, skip, from_)
    check_config(ctx.cfg)
    if ctx.rig is not None and not ctx.rig.exists():
        raise CaptureError(f"--rig {ctx.rig}: not found (expected a nerfstudio transforms.json, or a folder "
                           f"with COLMAP text cameras.txt + images.txt)")
    ctx.owned = claim_dir(ctx.out, "capture", arg="--out", inputs=[*ctx.inputs, ctx.rig], adopt=adopt_capture)
    ctx.owned.add(".capture/", "report/")
    ctx.work.mkdir(parents=True, exist_ok=True)
    (ctx.work / "stages").mkdir(exist_ok=True)
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
        with native_noise_filtered():  # mediapipe / TF Lite log lines (capture.noise)
            info = getattr(S, f"stage_{stage}")(ctx) or {}
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        atomic_write_json(marker, {"stage": stage, "hash": ctx.stage_hash(stage), "seconds": round(dt, 3),
                                   "cpu_seconds": round(dc, 3),
                                   "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                   "warnings": ctx.warnings, "info": info})
        status[stage] = "ran"
        ctx.log(f"[capture] {stage}: {dt:.2f} s")
    return status


def adopt_capture(root: Path):
    """A capture folder written before folders carried a marker (.capture/stages/ is the pipeline's own):
    -> the files of the capture layout found there (avatar.io.outdir adopts it), else None."""
    import re

    from avatar.data import schema

    if not (root / ".capture" / "stages").is_dir():
        return None
    files = [f for f in (schema.TRANSFORMS, schema.AUDIO, schema.TRACKS, schema.BACKGROUND) if (root / f).is_file()]
    for d in (schema.IMAGES_DIR, schema.MASKS_DIR):
        if (root / d).is_dir():
            files += [f"{d}/{x.name}" for x in (root / d).iterdir() if re.fullmatch(r"\d{6}\.(png|jpg)", x.name)]
    return files + [".capture/", "report/"]


def capture(inputs, out, *, rig=None, only=(), skip=(), from_=None, overwrite=False, log=print, **options):
    """Python API: run the pipeline (raises CaptureError on bad input); returns the stage status dict."""
    ctx = Context([Path(p) for p in inputs], Path(out), CaptureConfig(**options), rig=rig, log=log)
    return run(ctx, only=only, skip=skip, from_=from_, overwrite=overwrite)
