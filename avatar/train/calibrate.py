"""Skinning-gain calibration: the rendered mouth opens as much as the person's, as the detector sees it.

Landmark skinning moves the lip Gaussians exactly with the tracked landmarks (their projections reproduce
the 2D landmark opening to within 2 %), yet the rendered opening measured by the landmark detector is
smaller (0.69 of the real amplitude on a 71 s real clip at the cpu preset): Gaussian footprints bleed into a
small lip gap, so small openings are rendered smaller. One scalar gain g on the skinned displacements
corrects it. On `frames` training frames (never the held-out test frames) the mouth-opening amplitude
ratio r(g) = std(rendered opening) / std(real opening) is measured at g = 1 and g = `probe`, and g solves
r(g) = 1 on that line, clamped to [min_gain, max_gain]. The measurement is avatar.eval's
(analyse_reference + score_frames), so the calibration and the evaluation agree on what "opening" is.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import numpy as np


def calibrate_skin_gain(model, data, indices: Sequence[int], make_detector: Callable, backend: str = "auto",
                        probe: float = 1.5, min_gain: float = 0.75, max_gain: float = 2.0,
                        log: Optional[Callable[[str], None]] = None) -> Dict[str, float]:
    """Sets model.skin_gain from frames `indices` of `data` (FrameData, tracked motion) and returns
    {"skin_gain", "ratio_at_1", "ratio_at_probe", "probe", "frames"}. Leaves the gain at 1 when the
    detector finds no opening variation (ratio undefined) or the ratio does not grow with the gain."""
    import torch

    from avatar.eval.protocol import analyse_reference, score_frames
    from avatar.train.metrics import render_heldout

    idx = [int(i) for i in indices]
    ratios = {}
    ref = None
    for g in (1.0, probe):
        with torch.no_grad():
            model.skin_gain.fill_(g)
        model.invalidate_cache()
        pred, gt, masks, _ = render_heldout(model, data, idx, True, backend)
        if ref is None:
            ref = analyse_reference(gt, data.fps, make_detector, face_masks=masks)
        ratios[g] = score_frames(pred, ref, make_detector)["summary"].get("mouth_amplitude_ratio")
    r0, r1 = ratios[1.0], ratios[probe]
    gain = 1.0
    if r0 is not None and r1 is not None and np.isfinite([r0, r1]).all() and r1 > r0 + 1e-3:
        gain = float(np.clip(1.0 + (1.0 - r0) * (probe - 1.0) / (r1 - r0), min_gain, max_gain))
    with torch.no_grad():
        model.skin_gain.fill_(gain)
    model.invalidate_cache()
    if log:
        log(f"skinning gain {gain:.2f} (mouth amplitude ratio on {len(idx)} training frames: {r0} at gain 1, "
            f"{r1} at {probe})")
    return {"skin_gain": gain, "ratio_at_1": r0, "ratio_at_probe": r1, "probe": probe, "frames": len(idx)}
