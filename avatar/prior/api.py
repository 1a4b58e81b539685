"""The motion prior's one door: load, predict, style, personalise. Train, drive, serve and export
call only these (the commands `avatar prior train|finetune` live in avatar.commands.prior).

    SHIPPED_PRIOR / default_prior() / resolve_prior(arg)   the prior inside the package (no download)
    load_prior(prior_path) -> MotionPrior (cached)
    predict_prior(prior_path, wav, fps, num_frames, style=None, motion_space=None, person_mean=None,
                  person_std=None)
        -> {"motion" [F, M] absolute codes, "deviation" [F, M], "opening" [F], "blink" [F],
            "head_pose" [F, 6]}                                       (the ONE inference path)
    style_from_capture(capture_dir, seconds=5.0, prior_path=None) -> (ref_audio_feats [R, D], ref_motion [R, M])
    motion_for_training(prior_path, ds, source="tracked"|"predicted") -> np.float32 [F_ds, M]   (avatar train --prior)
    finetune_on_capture(prior_path, capture_dir, out=None, steps=300, ...) -> Path           (personalisation)
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from avatar.prior.config import PriorTrainConfig

SHIPPED_PRIOR = Path(__file__).resolve().parent / "weights" / "prior.pt"
"""The pretrained prior shipped inside the package (model card: weights/MODEL_CARD.md)."""


def default_prior() -> Optional[Path]:
    """The shipped prior when the package has it (an install without package data: None)."""
    return SHIPPED_PRIOR if SHIPPED_PRIOR.is_file() else None


def resolve_prior(arg) -> Optional[Path]:
    """A --prior option: None or "default" -> the shipped prior (None when absent), "none" / "off" ->
    None (prior turned off), anything else -> that path."""
    if arg is None or str(arg) in ("default", "shipped"):
        return default_prior()
    if str(arg).lower() in ("none", "off", "no"):
        return None
    return Path(arg)


def _audio_cfg(d: Optional[Dict[str, Any]] = None, n_mels: Optional[int] = None):
    from avatar.audio.features import AudioFeatureConfig

    cfg = AudioFeatureConfig(**(d or {}))
    if n_mels is not None:
        cfg = dataclasses.replace(cfg, n_mels=n_mels)
    return cfg


def _log(msg: str) -> None:
    if os.environ.get("RANK", "0") == "0":   # one voice under torchrun
        print(f"[prior] {msg}", file=sys.stderr, flush=True)


def finetune_on_capture(prior_path, capture_dir, out=None, *, steps: int = 300, lr: float = 2e-4, batch_size: int = 8,
                        ref_seconds: float = 5.0, resume: bool = False) -> Path:
    """Fine-tune the prior at `prior_path` on one person's capture folder (its training frames only: the
    held-out test frames stay unseen, so `avatar eval` of the avatar is fair) and store their first
    `ref_seconds` as its style reference; returns the new prior's path (default PRIOR_<capture>.pt).
    The capture's motion space must be the prior's (PriorCheckpointError otherwise)."""
    from avatar.prior.data import load_clip
    from avatar.prior.model import MotionPrior

    prior_path = Path(prior_path)
    prior = MotionPrior.load(prior_path)
    clip, ms = load_clip(capture_dir, _audio_cfg(prior.audio_features), split="train")
    out = Path(out) if out is not None else prior_path.with_name(f"{prior_path.stem}_{Path(capture_dir).name}.pt")
    ref = max(1, min(clip.num_frames, int(round(ref_seconds * clip.fps))))
    tcfg = PriorTrainConfig(steps=steps, lr=lr, batch_size=batch_size, warmup_steps=min(20, steps), style_dropout=0.0,
                            style_augment=0.0, window_frames=min(48, clip.num_frames), ref_frames=ref,
                            checkpoint_every=max(50, steps // 4), log_every=50)
    finetune_prior(prior, clip, ms, tcfg, out, ref_frames=ref, resume=resume)
    return out


def finetune_prior(prior, clip, motion_space, tcfg: PriorTrainConfig, out: Optional[Path], ref_frames: int,
                   resume: bool = False, calib_fraction: float = 0.15, min_calib_frames: int = 100):
    """Fine-tune `prior` on one person's clip. Its last `calib_fraction` (when that is at least
    `min_calib_frames`) is held out to re-calibrate the amplitude (a fine-tuned prior shrinks less);
    shorter clips keep the generic calibration. The stored style reference holds the first
    `ref_frames` and the person's mean/std of motion codes (personalisation when the avatar has none)."""
    from avatar.prior.trainer import train_prior

    n_cal = int(clip.num_frames * calib_fraction)
    calib = None
    if n_cal >= min_calib_frames and clip.num_frames - n_cal >= tcfg.window_frames:
        calib = [clip.slice(clip.num_frames - n_cal, clip.num_frames)]
        clip = clip.slice(0, clip.num_frames - n_cal, clip.name)
    style_ref = {"audio": clip.feats[:ref_frames].clone(), "motion": clip.motion[:ref_frames].clone(),
                 "mean": clip.motion.mean(0).clone(), "std": clip.motion.std(0).clone()}
    return train_prior([clip], motion_space, prior.audio_features, tcfg, None, out, resume=resume, init=prior,
                       style_ref=style_ref, log=_log, calib_clips=calib)


# ---------------------------------------------------------------------------------------------
# the API train/drive call
# ---------------------------------------------------------------------------------------------
_CACHE: Dict[Tuple[str, float], Any] = {}


def load_prior(prior_path):
    """MotionPrior.load with a small cache keyed by (path, mtime)."""
    from avatar.prior.model import MotionPrior

    p = Path(prior_path)
    key = (str(p.resolve()), p.stat().st_mtime if p.is_file() else -1.0)
    if key not in _CACHE:
        if len(_CACHE) > 4:
            _CACHE.clear()
        _CACHE[key] = MotionPrior.load(p)
    return _CACHE[key]


def _style_inputs(prior, style, fps: float):
    import numpy as np
    import torch

    from avatar.prior.data import audio_clip_features

    if style is None:
        return None
    if not (isinstance(style, (tuple, list)) and len(style) == 2):
        raise ValueError("style must be (ref_audio_feats [R, D] or ref_wav [S], ref_motion [R, M]) or None")
    ref_audio, ref_motion = style
    ref_motion = torch.as_tensor(np.asarray(ref_motion, np.float32))
    if ref_motion.ndim != 2 or ref_motion.shape[1] != prior.motion_dim:
        raise ValueError(f"style: ref_motion must be [R, {prior.motion_dim}], got {tuple(ref_motion.shape)}")
    if not prior.cfg.style:    # statistics only (personal_stats): the audio is not needed
        return None if ref_audio is None else torch.as_tensor(np.asarray(ref_audio, np.float32)), ref_motion
    ref_audio = torch.as_tensor(np.asarray(ref_audio, np.float32))
    if ref_audio.ndim == 1:  # a wav: features for the R reference frames
        ref_audio = audio_clip_features(ref_audio.numpy(), fps, ref_motion.shape[0], _audio_cfg(prior.audio_features))[0]
    if ref_audio.shape != (ref_motion.shape[0], prior.cfg.audio_dim):
        raise ValueError(f"style: ref_audio_feats must be [R={ref_motion.shape[0]}, {prior.cfg.audio_dim}] "
                         f"(features of the prior's audio config), got {tuple(ref_audio.shape)}")
    return ref_audio, ref_motion


def personal_stats(prior, style=None, use_stored_style: bool = True, person_mean=None, person_std=None):
    """(mean [M] or None, std [M] or None, how) of the personalisation: the mean is the avatar's own
    (person_mean, from its checkpoint meta "motion_mean"), else the style reference's, else the stored
    reference's (`avatar prior finetune`), else None (the prior's pooled mean); the std is an explicit
    style reference's, else person_std, else the stored reference's, else None (the pool's typical spread)."""
    import numpy as np

    s_mean = s_std = t_mean = t_std = None
    if style is not None:
        rm = np.asarray(style[1], np.float32)
        s_mean = rm.mean(0)
        s_std = rm.std(0) if len(rm) > 1 else None
    if use_stored_style and prior.style_ref is not None:
        ref = prior.style_ref
        t_mean = np.asarray(ref["mean"] if "mean" in ref else ref["motion"].mean(0), np.float32)
        t_std = np.asarray(ref["std"], np.float32) if "std" in ref else None
    mean = next((m for m in (person_mean, s_mean, t_mean) if m is not None), None)
    std = next((m for m in (s_std, person_std, t_std) if m is not None), None)
    how = ("person" if person_mean is not None else "style" if s_mean is not None else
           "stored" if t_mean is not None else "pooled")
    how += "+std" if std is not None else ""
    return mean, std, how


def predict_prior(prior_path, wav, fps: float, num_frames: int, style=None, use_stored_style: bool = True,
                  motion_space: Optional[Dict[str, Any]] = None, source: str = "", person_mean=None,
                  person_std=None) -> Dict[str, "Any"]:
    """Audio -> {"motion": np.float32 [F, M] ABSOLUTE motion codes (the prior's MotionSpace),
    "deviation": [F, M] the predicted codes minus the person's mean, "opening": [F] the mouth opening
    those codes mean (inner-lip gap / inter-ocular), "blink": [F] in [0, 1], "head_pose": [F, 6]
    rotation vector + translation relative to the mean pose, "personalised": how (see personal_stats)}.

    wav: np.float32 [S] 16 kHz mono. person_mean / person_std [M]: the target person's mean and std
    of tracked codes (an avatar checkpoint's meta "motion_mean" / "motion_std"): motion = mean +
    deviation scaled per code dimension to the person's std. style: (ref_audio_feats [R, D] or a ref
    wav or None, ref_motion [R, M]) of the target person: its mean/std personalise the same way; None:
    the reference stored by `avatar prior finetune` when present and use_stored_style. Without any of
    these the prior's pooled mean and typical amplitude are used. motion_space: the avatar's or
    capture's motion-space definition; when given, a prior trained in another space is refused
    (PriorCheckpointError naming `source`).

    The ONE prior inference path: train (--prior), drive, serve and export all call this."""
    import numpy as np

    from avatar.prior.data import audio_clip_features

    if num_frames < 1 or fps <= 0:
        raise ValueError(f"predict_prior: need num_frames >= 1 and fps > 0, got {num_frames}, {fps}")
    prior = load_prior(prior_path)
    if motion_space:
        prior.check_motion_space(motion_space, source=source or str(prior_path))
    feats, pitch = audio_clip_features(np.asarray(wav, np.float32), fps, int(num_frames), _audio_cfg(prior.audio_features))
    style_in = _style_inputs(prior, style, fps)
    out = prior.predict(feats, pitch, style_in if prior.cfg.style else None, use_stored_style=use_stored_style)
    mean, std, how = personal_stats(prior, None if style_in is None else (None, style_in[1].numpy()), use_stored_style,
                                    person_mean, person_std)
    motion = prior.personalise(out["deviation"], mean, std)
    res = {k: v.cpu().numpy().astype(np.float32) for k, v in out.items() if k in ("deviation", "blink", "head_pose")}
    res["motion"] = motion.numpy().astype(np.float32)
    res["opening"] = prior.opening_of(motion).numpy().astype(np.float32)
    res["personalised"] = how
    return res


def style_from_capture(capture_dir, seconds: float = 5.0, prior_path=None):
    """A person's style reference from their capture folder: (ref_audio_feats [R, D], ref_motion [R, M]),
    the first `seconds`. With prior_path, features use the prior's audio config and the capture's
    motion space is checked against the prior's."""
    from avatar.prior.data import load_clip

    prior = load_prior(prior_path) if prior_path is not None else None
    clip, ms = load_clip(capture_dir, _audio_cfg(prior.audio_features if prior else None))
    if prior is not None:
        prior.check_motion_space(ms, str(capture_dir))
    r = max(1, min(clip.num_frames, int(round(seconds * clip.fps))))
    return clip.feats[:r].numpy(), clip.motion[:r].numpy()


def motion_for_training(prior_path, ds, source: str = "tracked", style_seconds: float = 5.0):
    """For `avatar train --prior`: the motion input of the deformation network, np.float32 [F_ds, M]
    (one row per dataset frame), in the prior's motion space (checked: a capture made with another
    MotionSpace raises PriorCheckpointError).
    source="tracked": the capture's own tracked codes (the avatar learns motion -> appearance from the
    truth; at drive time the prior supplies codes in the same space). source="predicted": the prior's
    prediction from the capture's audio, personalised by the capture's own tracked mean/std per code
    (train on what drive will feed: drive personalises by the checkpoint's meta "motion_mean"/"motion_std",
    the same statistics). style_seconds is unused: the prior has no style tokens (kept for callers)."""
    import numpy as np

    from avatar.prior.model import PriorCheckpointError

    prior = load_prior(prior_path)
    if ds.motion_space is None:
        raise PriorCheckpointError(f"{ds.root}: no motion-space definition in transforms.json (re-run tracking)")
    prior.check_motion_space(ds.motion_space.to_dict(), str(ds.root))
    tracked = np.asarray(ds.tracks["motion"], np.float32)
    if tracked.shape[1] != prior.motion_dim:
        raise PriorCheckpointError(f"{ds.root}: motion codes have M={tracked.shape[1]}, the prior predicts "
                                   f"M={prior.motion_dim}")
    if source == "tracked":
        return tracked
    if source != "predicted":
        raise ValueError(f"motion_for_training: source must be 'tracked' or 'predicted', got {source!r}")
    if ds.audio is None:
        raise ValueError(f"{ds.root}: source='predicted' needs the capture's audio (captured without audio)")
    times = np.asarray(ds.frame_times, np.int64)
    n_t = int(times.max()) + 1
    _, first = np.unique(times, return_index=True)
    first = np.sort(first)
    return predict_prior(prior_path, ds.audio, ds.fps, n_t, person_mean=tracked.mean(0),
                         person_std=tracked.std(0))["motion"][times]

