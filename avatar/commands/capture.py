"""`avatar capture`: the command-line front of the capture pipeline."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Optional, Tuple

import tyro

from avatar.commands import fail
from capture.config import CaptureConfig


@dataclasses.dataclass
class Capture:
    """Turn a talking-head video (or a calibrated multi-view rig) into a training dataset."""

    inputs: tyro.conf.Positional[Tuple[Path, ...]]
    """Video file(s) of one person (several clips are concatenated in order); with --rig, one video
    or frame folder per calibrated camera."""
    out: Path = Path("outputs/capture")
    """Output capture folder (read by avatar.data.load_capture)."""
    rig: Optional[Path] = None
    """Calibration of a synchronised multi-view rig: a nerfstudio transforms.json, or a folder with
    COLMAP text cameras.txt + images.txt (one entry per camera, matched to inputs by name or order)."""
    only: Tuple[str, ...] = ()
    """Run only these stages (and rerun them even if finished)."""
    skip: Tuple[str, ...] = ()
    """Do not run these stages (their outputs must exist)."""
    from_: Annotated[Optional[str], tyro.conf.arg(name="from")] = None
    """Rerun from this stage on (it and every later stage)."""
    overwrite: bool = False
    """Rerun every selected stage even when finished with the same options."""
    config: tyro.conf.OmitArgPrefixes[CaptureConfig] = dataclasses.field(default_factory=CaptureConfig)
    """Pipeline options."""

    def main(self) -> int:
        from capture.context import Context
        from capture.errors import CaptureError
        from capture.pipeline import run

        ctx = Context(self.inputs, self.out, self.config, rig=self.rig)
        try:
            run(ctx, only=self.only, skip=self.skip, from_=self.from_, overwrite=self.overwrite)
        except CaptureError as e:
            return fail("capture", e)
        summary = self.out / "report" / "summary.json"
        if summary.is_file():
            import json

            s = json.loads(summary.read_text())
            print(f"[capture] {s['frames_kept']} frames kept, {s['frames_dropped']} dropped (landmark coverage "
                  f"{s['landmark_coverage']:.1%}), {len(s['warnings'])} warning(s); report: {summary.parent}")
            for w in s["warnings"]:
                print(f"[capture]   - {w}")
        print(f"[capture] dataset written to {self.out}")
        return 0


