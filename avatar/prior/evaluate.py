"""How well a motion prior moves a real person's mouth: evaluate_prior(prior_path, capture_dirs) -> dict.

For each capture folder (a person the prior never saw, with the audio of their own clip):
* the real mouth: opening = inner-lip gap / inter-ocular from the capture's 2D landmarks
  (avatar.eval.landmarks.mouth_opening), one row per video time;
* the prior's mouth: the opening its predicted codes mean (MotionPrior.opening_of, a linear map fitted
  on the training identities), with the contract the avatar uses: the person's mean codes (the
  avatar checkpoint's meta "motion_mean", here the tracked codes' mean) + the predicted deviation
  ("prior"); the same scaled to the person's std per code ("prior_std", meta "motion_std"); with
  the prior's pooled mean only ("prior_pooled": nothing known of the person); styled by the first
  `style_seconds` of the clip and scored on the rest ("prior_style", and the "prior" figures of
  the same frames as "prior_style_ref" to compare);
* baselines: the person's mean opening ("mean": a still mouth) and the audio energy ("energy": the
  person's mean + the pool's typical opening spread x the z-scored speech envelope in dB at lag 0,
  avatar.eval.sync.speech_envelope).
Scores (avatar.eval): mouth_open_corr and mouth_amplitude_ratio (opening_stats), and
speech_silence_rel = speech_silence_ratio(prediction) / speech_silence_ratio(real mouth), both with the
same voice activity (avatar.audio.vad.voice_activity, Silero when installed).

evaluate_personal(prior_path, capture_dir) measures fine-tuning: the first 10/11 of the clip
personalises (mean/std, and `avatar prior finetune`-style training), the last 1/11 scores.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

VARIANTS = ("prior", "prior_std", "prior_pooled", "prior_style", "prior_style_ref", "mean", "energy")


def _real(capture_dir):
    """(ds, wav, times [F], tracked codes [F, M], real opening [F], n_t) of a capture folder."""
    from avatar.data import load_capture
    from avatar.eval.landmarks import mouth_opening

    ds = load_capture(capture_dir)
    if ds.audio is None:
        raise ValueError(f"{capture_dir}: the capture has no audio")
    times = np.asarray(ds.frame_times, np.int64)
    _, first = np.unique(times, return_index=True)
    first = np.sort(first)
    t = times[first]
    tr = ds.tracks
    motion = np.asarray(tr["motion"][first], np.float32)
    opening = np.asarray(mouth_opening(np.asarray(tr["landmarks2d"][first], np.float64)), np.float64)
    return ds, np.asarray(ds.audio, np.float32), t, motion, opening, int(t.max()) + 1


def _scores(real, pred, voiced) -> Dict[str, Optional[float]]:
    from avatar.eval.landmarks import opening_stats
    from avatar.eval.sync import speech_silence_ratio

    st = opening_stats(real, pred)
    r_real = speech_silence_ratio(real, voiced)
    r_pred = speech_silence_ratio(pred, voiced)
    rel = None if r_real is None or r_pred is None or r_real <= 0 else r_pred / r_real
    return {"mouth_open_corr": st["mouth_open_corr"], "mouth_amplitude_ratio": st["mouth_amplitude_ratio"],
            "speech_silence_ratio": r_pred, "real_speech_silence_ratio": r_real, "speech_silence_rel": rel,
            "frames": st["frames"]}


def _mean_of(rows: List[Dict[str, Any]], key: str) -> Optional[float]:
    v = [r[key] for r in rows if r.get(key) is not None and np.isfinite(r[key])]
    return float(np.mean(v)) if v else None


def evaluate_prior(prior_path, capture_dirs: Sequence, style_seconds: float = 5.0,
                   vad_backend: str = "auto") -> Dict[str, Any]:
    """Score the prior at `prior_path` on each capture folder (see the module docstring). Returns
    {"summary": {prior_unseen_mouth_open_corr, prior_unseen_amplitude_ratio, prior_unseen_speech_silence_rel,
    the same with prior_std_*, prior_pooled_*, prior_style_*, baseline_mean_*, baseline_energy_*,
    shipped_prior_mb}, "per_clip": {clip: {variant: scores}}, "settings": {...}}; summary figures are
    means over the clips."""
    from avatar.audio.vad import voice_activity
    from avatar.eval.sync import speech_envelope
    from avatar.prior.api import load_prior, predict_prior

    prior = load_prior(prior_path)
    open_sd = float(prior.meta.get("open_dev_std") or 0.03)
    per: Dict[str, Dict[str, Any]] = {}
    for d in capture_dirs:
        ds, wav, t, motion, real, n_t = _real(d)
        va = voice_activity(wav, ds.fps, n_t, vad_backend)
        voiced = np.asarray(va.voiced, bool)[t]
        mu, sd = motion.mean(0), motion.std(0)
        kw = dict(motion_space=ds.motion_space.to_dict() if ds.motion_space is not None else None, source=str(d))
        pred = {
            "prior": predict_prior(prior_path, wav, ds.fps, n_t, person_mean=mu, **kw)["opening"][t],
            "prior_std": predict_prior(prior_path, wav, ds.fps, n_t, person_mean=mu, person_std=sd, **kw)["opening"][t],
            "prior_pooled": predict_prior(prior_path, wav, ds.fps, n_t, use_stored_style=False, **kw)["opening"][t],
        }
        rows = {k: _scores(real, v, voiced) for k, v in pred.items()}
        r = int(round(style_seconds * ds.fps))
        if len(t) - r >= 3 * ds.fps:                 # enough left to score after the style reference
            ref = slice(0, r)
            st = predict_prior(prior_path, wav, ds.fps, n_t, style=(None, motion[ref]), person_mean=mu, **kw)
            rows["prior_style"] = _scores(real[r:], st["opening"][t][r:], voiced[r:])
            rows["prior_style_ref"] = _scores(real[r:], pred["prior"][r:], voiced[r:])
        rows["mean"] = _scores(real, np.full_like(real, np.nanmean(real)), voiced)
        env = speech_envelope(wav, ds.fps, n_t)[t]
        z = (env - env.mean()) / max(env.std(), 1e-9)
        rows["energy"] = _scores(real, np.nanmean(real) + open_sd * z, voiced)
        rows["info"] = {"frames": int(len(t)), "fps": float(ds.fps), "seconds": float(len(t) / ds.fps),
                        "real_opening_mean": float(np.nanmean(real)), "real_opening_std": float(np.nanstd(real)),
                        "voiced_fraction": float(voiced.mean()), "vad": va.backend}
        per[Path(d).name] = rows
    summary: Dict[str, Any] = {}
    names = {"prior": "prior_unseen", "prior_std": "prior_std_unseen", "prior_pooled": "prior_pooled_unseen",
             "prior_style": "prior_style_unseen", "prior_style_ref": "prior_style_ref_unseen",
             "mean": "baseline_mean", "energy": "baseline_energy"}
    for v, name in names.items():
        rows = [p[v] for p in per.values() if v in p]
        summary[f"{name}_mouth_open_corr"] = _mean_of(rows, "mouth_open_corr")
        summary[f"{name}_amplitude_ratio"] = _mean_of(rows, "mouth_amplitude_ratio")
        summary[f"{name}_speech_silence_rel"] = _mean_of(rows, "speech_silence_rel")
    p = Path(prior_path)
    summary["shipped_prior_mb"] = round(p.stat().st_size / 2 ** 20, 3)
    settings = {"prior": str(prior_path), "clips": [Path(d).name for d in capture_dirs], "style_seconds": style_seconds,
                "energy_open_std": open_sd, "aggregate": "mean over clips",
                "opening": "inner-lip gap (13-14) / inter-ocular (33-263), capture landmarks2d",
                "prior_opening": "MotionPrior.opening_of(absolute predicted codes) (linear map fitted on train identities)"}
    return {"summary": summary, "per_clip": per, "settings": settings}


def evaluate_personal(prior_path, capture_dir, steps: int = 300, train_fraction: float = 10 / 11,
                      out_dir=None, vad_backend: str = "auto") -> Dict[str, Any]:
    """Personalisation on one held-out person: the first `train_fraction` of the clip gives the person's
    mean/std and fine-tunes the prior (`steps`, as `avatar prior finetune`); the rest scores
    {"generic" (pooled amplitude, person mean), "generic_std" (+ person std), "finetuned" (fine-tuned
    prior, person mean + std)} with the figures of evaluate_prior."""
    import tempfile

    from avatar.audio.vad import voice_activity
    from avatar.prior.api import _audio_cfg, finetune_prior, load_prior, predict_prior
    from avatar.prior.config import PriorTrainConfig
    from avatar.prior.data import load_clip

    ds, wav, t, motion, real, n_t = _real(capture_dir)
    cut = int(len(t) * train_fraction)
    mu, sd = motion[:cut].mean(0), motion[:cut].std(0)
    voiced = np.asarray(voice_activity(wav, ds.fps, n_t, vad_backend).voiced, bool)[t]
    test = slice(cut, len(t))
    kw = dict(motion_space=ds.motion_space.to_dict() if ds.motion_space is not None else None, source=str(capture_dir))
    rows = {"generic": predict_prior(prior_path, wav, ds.fps, n_t, person_mean=mu, **kw)["opening"][t],
            "generic_std": predict_prior(prior_path, wav, ds.fps, n_t, person_mean=mu, person_std=sd, **kw)["opening"][t]}
    prior = load_prior(prior_path)
    clip, ms = load_clip(capture_dir, _audio_cfg(prior.audio_features))
    train_clip = clip.slice(0, cut, clip.name)
    out_dir = Path(out_dir or tempfile.mkdtemp(prefix="prior_personal_"))
    out = out_dir / f"prior_{Path(capture_dir).name}.pt"
    ref = min(cut, int(round(5 * ds.fps)))
    tcfg = PriorTrainConfig(steps=steps, lr=2e-4, batch_size=8, warmup_steps=min(20, steps), style_dropout=0.0,
                            window_frames=min(48, cut), ref_frames=ref, checkpoint_every=0, log_every=0)
    finetune_prior(prior, train_clip, ms, tcfg, out, ref_frames=ref)
    rows["finetuned"] = predict_prior(out, wav, ds.fps, n_t, person_mean=mu, person_std=sd, **kw)["opening"][t]
    res = {k: _scores(real[test], v[test], voiced[test]) for k, v in rows.items()}
    res["info"] = {"train_frames": cut, "test_frames": int(len(t) - cut), "finetune_steps": steps, "prior": str(out)}
    return res
