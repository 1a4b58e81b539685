"""capture: a phone video (or a calibrated multi-view rig) -> a capture folder read by avatar.data.

    avatar capture VIDEO [VIDEO ...] --out DIR

Stages (capture.stages.STAGES): probe, frames, audio, faces, landmarks, tracking, masks,
background, split, write. Imports avatar.data / avatar.media / avatar.ops only.
"""
