"""`avatar bench prior` -> benchmarks/results/prior.json.

Held-out identities (never seen by the prior). For each one, its first `personal_seconds` are "the
person's own short clip" and the rest is the test audio; errors are normalised motion-code MSE on the
test part (sum of squared code errors / sum of squared deviations of the ground truth from its mean:
0 = perfect, 1 = as good as predicting the person's mean motion):

    motion_err_prior_style     generic prior + in-context style reference (the personal clip)
    motion_err_prior           generic prior alone
    motion_err_personal_only   an audio-only model (same architecture, no style) trained on the personal clip only
    motion_err_prior_finetuned prior fine-tuned on the personal clip, with it as style reference
    silence_to_speech_opening_ratio  mean mouth opening (clamped >= 0) predicted for silent audio
                               (digital zero and -60 dBFS noise; the worse is reported) over that for speech

Data: `--synth-dir DIR` reads `avatar synth --identities N` folders (DIR/id_XX/ with audio.wav and
ground_truth.npz; motion codes from the ground-truth landmarks3d through avatar.data.MotionSpace), or
capture folders of them; without it, procedural identities (avatar.apps.prior_data.synthetic_identity).
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from avatar.apps.prior_config import PriorTrainConfig
from avatar.model.motion_prior_config import MotionPriorConfig


def _default_train() -> PriorTrainConfig:
    return PriorTrainConfig(steps=1500, batch_size=16, window_frames=64, ref_frames=125, lr=1e-3, warmup_steps=100,
                            checkpoint_every=0, log_every=250)


def _default_model() -> MotionPriorConfig:
    return MotionPriorConfig(d_model=96, num_layers=3, num_heads=4, past_frames=24, lookahead_frames=2, dropout=0.1)


@dataclass
class BenchPrior:
    """Benchmark the motion prior on held-out identities (prior vs prior+style vs personal-only)."""

    out: Path = Path("benchmarks/results/prior.json")
    """Result JSON."""
    synth_dir: Optional[Path] = None
    """Folder of `avatar synth --identities N` outputs (id_XX/ subfolders) or capture folders; default:
    procedural identities."""
    train_identities: int = 24
    """Procedural identities the prior is trained on (ignored with synth_dir: all but the held-out ones)."""
    heldout_identities: int = 6
    """Identities held out for evaluation."""
    seconds: float = 30.0
    """Seconds of procedural audio per identity."""
    personal_seconds: float = 5.0
    """Seconds of the held-out person used as style reference / personal training data."""
    train: PriorTrainConfig = field(default_factory=_default_train)
    """Prior training."""
    model: MotionPriorConfig = field(default_factory=_default_model)
    """Prior architecture."""
    personal_steps: int = 600
    """Training steps of the personal-only baseline."""
    finetune_steps: int = 100
    """Fine-tuning steps of the prior on the personal clip."""
    threads: int = 2
    """torch CPU threads."""
    seed: int = 0
    """Seed of the data and models."""

    def main(self) -> int:
        res = run_bench(self)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(self.out.name + ".tmp")
        tmp.write_text(json.dumps(res, indent=2) + "\n")
        os.replace(tmp, self.out)
        print(json.dumps(res["summary"], indent=2))
        return 0


def opening_readout(motion_space: Dict[str, Any], motion_dim: int):
    """Linear read-out of mouth opening from motion codes: w [M] with opening = codes @ w.
    MotionSpace: the vertical gap change between the inner-lip midpoints (landmarks 13 and 14, y down),
    in the space's units; procedural: the 'open' basis."""
    import numpy as np

    if motion_space.get("kind") == "procedural":
        from avatar.apps.prior_data import _bases
        return np.asarray(_bases(motion_dim)[0], np.float32)
    idx = list(motion_space["indices"])
    if 13 not in idx or 14 not in idx:
        raise ValueError("opening_readout: the motion space has no inner-lip landmarks 13/14")
    w = np.zeros(motion_dim, np.float32)
    w[3 * idx.index(14) + 1] = 1.0
    w[3 * idx.index(13) + 1] = -1.0
    return w


def _nmse(pred, gt) -> float:
    import torch
    gt = torch.as_tensor(gt)
    return float(((torch.as_tensor(pred) - gt) ** 2).sum() / ((gt - gt.mean(0)) ** 2).sum().clamp_min(1e-12))


def _load_identities(b: BenchPrior, acfg):
    from avatar.apps.prior_data import SYNTH_MOTION_SPACE, load_clip, synthetic_clip

    if b.synth_dir is None:
        n = b.train_identities + b.heldout_identities
        clips = [synthetic_clip(b.seed * 10_000 + i, acfg, seconds=b.seconds) for i in range(n)]
        return clips[:b.train_identities], clips[b.train_identities:], SYNTH_MOTION_SPACE, "procedural"
    dirs = sorted(p for p in Path(b.synth_dir).iterdir() if p.is_dir())
    if len(dirs) < b.heldout_identities + 2:
        raise ValueError(f"{b.synth_dir}: {len(dirs)} identity folders; need at least {b.heldout_identities + 2}")
    clips, space = [], None
    for d in dirs:
        c, ms = load_clip(d, acfg)
        if space is not None and ms != space:
            raise ValueError(f"{d}: motion space differs from the other identities'")
        space = ms
        clips.append(c)
    src = clips[0].info.get("source", "?")
    return clips[:-b.heldout_identities], clips[-b.heldout_identities:], space, f"synth_dir ({src}): {b.synth_dir}"


def run_bench(b: BenchPrior) -> Dict[str, Any]:
    import dataclasses

    import numpy as np
    import torch

    from avatar.apps.prior import finetune_prior
    from avatar.apps.prior_data import PriorClip
    from avatar.apps.prior_trainer import train_prior
    from avatar.audio.features import AudioFeatureConfig
    from avatar.model.motion_prior import frame_pitch

    torch.set_num_threads(b.threads)
    t_start = time.time()
    acfg = AudioFeatureConfig()
    train_clips, held, space, source = _load_identities(b, acfg)
    fps = train_clips[0].fps
    t0 = time.time()
    prior = train_prior(train_clips, space, acfg.to_dict(), dataclasses.replace(b.train, seed=b.seed), b.model, None,
                        log=lambda m: print(f"[bench prior] {m}", file=sys.stderr, flush=True))
    t_prior = time.time() - t0
    w_open = torch.as_tensor(opening_readout(space, prior.motion_dim))
    per_id: List[Dict[str, Any]] = []
    np_ = int(round(b.personal_seconds * fps))
    t_personal = t_finetune = 0.0
    for c in held:
        if c.num_frames < np_ + 64:
            raise ValueError(f"{c.name}: {c.num_frames} frames; need > {np_ + 64} (personal clip + test)")
        ref, test = c.slice(0, np_, c.name + "_personal"), c.slice(np_, c.num_frames, c.name + "_test")
        style = (ref.feats, ref.motion)
        p_plain = prior.predict(test.feats, test.pitch, None)["motion"]
        p_style = prior.predict(test.feats, test.pitch, style)["motion"]
        t0 = time.time()
        personal_cfg = dataclasses.replace(b.model, style=False)
        personal = train_prior([ref], space, acfg.to_dict(),
                               PriorTrainConfig(steps=b.personal_steps, batch_size=8, window_frames=min(64, np_),
                                                ref_frames=np_, lr=1e-3, warmup_steps=50, checkpoint_every=0,
                                                style_augment=0.0,
                                                log_every=0, seed=b.seed, pca_var=b.train.pca_var),
                               personal_cfg, None, log=lambda m: None)
        t_personal += time.time() - t0
        p_personal = personal.predict(test.feats, test.pitch, None)["motion"]
        t0 = time.time()
        ft = finetune_prior(prior, ref, space, PriorTrainConfig(steps=b.finetune_steps, batch_size=8, lr=2e-4,
                                                                   warmup_steps=10, style_dropout=0.0, style_augment=0.0,
                                                                   window_frames=min(64, np_), ref_frames=np_,
                                                                   checkpoint_every=0, log_every=0, seed=b.seed),
                            None, ref_frames=np_)
        t_finetune += time.time() - t0
        p_ft = ft.predict(test.feats, test.pitch, style)["motion"]
        gt = test.motion
        # silence vs speech (with the style reference: the deployment setting)
        n_sil = 250
        sil = {}
        g = np.random.default_rng(b.seed)
        for name, wav in (("zeros", np.zeros(int(n_sil / fps * 16000), np.float32)),
                          ("noise_-60dBFS", (10 ** (-60 / 20) * g.standard_normal(int(n_sil / fps * 16000))).astype(np.float32))):
            from avatar.audio.features import frame_features
            f_ = frame_features(wav, fps, n_sil, acfg)
            p_ = frame_pitch(wav, fps, n_sil)
            for sname, st in (("style", style), ("plain", None)):
                sil[f"{name}_{sname}"] = float((prior.predict(f_, p_, st)["motion"] @ w_open).clamp_min(0).mean())
        speech_open = {"style": float((p_style @ w_open).clamp_min(0).mean()),
                       "plain": float((p_plain @ w_open).clamp_min(0).mean()),
                       "ground_truth": float((gt @ w_open).clamp_min(0).mean())}
        gt_open, pr_open = (gt @ w_open).numpy(), (p_style @ w_open).numpy()
        per_id.append({
            "identity": c.name, "style": c.info.get("style"), "test_frames": int(test.num_frames),
            "motion_err_prior_style": _nmse(p_style, gt), "motion_err_prior": _nmse(p_plain, gt),
            "motion_err_personal_only": _nmse(p_personal, gt), "motion_err_prior_finetuned": _nmse(p_ft, gt),
            "mouth_open_corr_prior_style": float(np.corrcoef(gt_open, pr_open)[0, 1]),
            "opening_silence": sil, "opening_speech": speech_open,
            "silence_to_speech_opening_ratio": max(sil["zeros_style"], sil["noise_-60dBFS_style"]) / max(speech_open["style"], 1e-9),
        })

    def mean(k):
        return float(np.mean([r[k] for r in per_id]))

    summary = {k: mean(k) for k in ("motion_err_prior_style", "motion_err_prior", "motion_err_personal_only",
                                    "motion_err_prior_finetuned", "mouth_open_corr_prior_style",
                                    "silence_to_speech_opening_ratio")}
    summary["ordering_holds"] = bool(summary["motion_err_prior_style"] <= summary["motion_err_prior"]
                                     <= summary["motion_err_personal_only"])
    summary["ordering_holds_per_identity"] = float(np.mean([
        r["motion_err_prior_style"] <= r["motion_err_prior"] <= r["motion_err_personal_only"] for r in per_id]))
    summary["silence_goal_met"] = bool(summary["silence_to_speech_opening_ratio"] <= 0.3)
    import numpy
    return {
        "benchmark": "prior",
        "device": {"kind": "cpu", "cpu": platform.processor() or platform.machine(), "threads": b.threads,
                   "cpu_count": os.cpu_count()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__},
        "settings": {
            "data": source,
            "motion_space": space,
            "train_identities": [c.name for c in train_clips], "heldout_identities": [c.name for c in held],
            "frames_per_identity": int(train_clips[0].num_frames), "fps": fps,
            "personal_seconds": b.personal_seconds, "audio_features": acfg.to_dict(),
            "prior_train": asdict(b.train), "prior_model": asdict(prior.cfg),
            "pca_components": prior.pca.latent_dim, "pca_explained": prior.pca.explained,
            "prior_params": int(sum(p.numel() for p in prior.parameters())),
            "personal_only": {"steps": b.personal_steps, "model": "same architecture, style=False, trained on the "
                              "personal clip alone (its own normalisation and PCA)"},
            "finetune": {"steps": b.finetune_steps, "lr": 2e-4},
            "error_metric": "normalised MSE of motion codes on the held-out part (sum sq err / sum sq dev of GT from its mean)",
            "opening_readout": "procedural: 'open' basis; MotionSpace: inner-lip (14 minus 13) vertical code",
        },
        "timing_s": {"prior_train": round(t_prior, 1), "personal_only_train_total": round(t_personal, 1),
                     "finetune_total": round(t_finetune, 1), "total": round(time.time() - t_start, 1)},
        "per_identity": per_id,
        "summary": summary,
    }
