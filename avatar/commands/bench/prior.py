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

Data (`--data`): "synth" (default) reads `avatar synth --identities N` folders (SYNTH_DIR/id_XX/ with
audio.wav and ground_truth.npz; motion codes from the ground-truth landmarks3d through
avatar.data.MotionSpace with a neutral estimated per identity, as capture does; capture folders of
them work too) and runs `avatar synth` in a subprocess to make them when SYNTH_DIR has none;
"procedural" uses in-process identities (avatar.prior.data.synthetic_identity: richer
articulation - 8 vowels, labial consonants - and per-identity gains of opening/spreading/rounding).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Tuple

from avatar.audio.timeline import SAMPLE_RATE
from avatar.io.atomic import atomic_write_json
from avatar.prior.config import MotionPriorConfig, PriorTrainConfig
from avatar.commands.bench.machine import device, versions


def _default_train() -> PriorTrainConfig:
    return PriorTrainConfig(steps=1000, batch_size=16, window_frames=64, ref_frames=125, lr=1e-3, warmup_steps=100,
                            checkpoint_every=0, log_every=100)


def _default_model() -> MotionPriorConfig:
    return MotionPriorConfig(d_model=64, num_layers=3, num_heads=4, past_frames=24, lookahead_frames=2, dropout=0.1,
                             style_layers=1)


@dataclass
class BenchPrior:
    """Benchmark the motion prior on held-out identities (prior vs prior+style vs personal-only)."""

    out: Path = Path("benchmarks/results/prior.json")
    """Result JSON."""
    data: Literal["synth", "procedural"] = "synth"
    """Identities: `avatar synth --identities N` folders, or in-process procedural ones."""
    synth_dir: Path = Path("outputs/prior_synth_ids")
    """Folder of identity subfolders (id_XX/ from `avatar synth --identities N`, or capture folders);
    made with `avatar synth` when it has none."""
    train_identities: int = 24
    """Identities the prior is trained on (synth: the first ones; synth_dir may hold more)."""
    heldout_identities: int = 6
    """Identities held out for evaluation (the last ones)."""
    seconds: float = 24.0
    """Seconds of audio per identity (when generating)."""
    synth_seed: int = 7
    """`avatar synth --seed` when generating."""
    personal_seconds: float = 5.0
    """Seconds of the held-out person used as style reference / personal training data."""
    train: PriorTrainConfig = field(default_factory=_default_train)
    """Prior training."""
    model: MotionPriorConfig = field(default_factory=_default_model)
    """Prior architecture."""
    personal_steps: int = 400
    """Training steps of the personal-only baseline."""
    finetune_steps: int = 80
    """Fine-tuning steps of the prior on the personal clip."""
    media_dir: Path = Path(__file__).resolve().parents[2].parent / "shared" / "media"
    """Real test media (audio/*.ogg|flac|mp3): real-speech opening and envelope correlation; skipped if absent."""
    real_captures: Tuple[Path, ...] = (Path("outputs/prior_real/may_5s"),)
    """Real capture folders (avatar capture of a real video; e.g. ../shared/media/video/may_5s.mp4) evaluated
    like the held-out identities with the first half as the personal clip; missing ones are listed and skipped."""
    save_prior: Path = Path("outputs/bench_prior/prior.pt")
    """Where the benchmark's trained prior is kept (for inspection / drive)."""
    threads: int = 2
    """torch CPU threads."""
    seed: int = 0
    """Seed of the data and models."""

    def main(self) -> int:
        res = run_bench(self)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.out, res, indent=2)
        print(json.dumps(res["summary"], indent=2))
        return 0


def opening_readout(motion_space: Dict[str, Any], motion_dim: int):
    """Linear read-out of mouth opening from motion codes: w [M] with opening = codes @ w.
    MotionSpace: the vertical gap change between the inner-lip midpoints (landmarks 13 and 14, y down),
    in the space's units; procedural: the 'open' basis."""
    import numpy as np

    if motion_space.get("kind") == "procedural":
        from avatar.prior.data import _bases
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


def _make_synth(b: BenchPrior, n: int) -> None:
    """`avatar synth --identities n` into synth_dir (a subprocess: apps never import capture/)."""
    cmd = [sys.executable, "-m", "avatar", "synth", "--identities", str(n), "--seconds", str(b.seconds),
           "--width", "32", "--height", "32", "--spacing", "0.02", "--no-masks", "--seed", str(b.synth_seed),
           "--overwrite", "--out", str(b.synth_dir)]
    print(f"[bench prior] {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    try:
        subprocess.run(cmd, check=True)
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"`avatar synth` failed ({e}); make the identities yourself with "
                           f"`avatar synth --identities {n} --out {b.synth_dir}` or use --data procedural") from e


def _load_identities(b: BenchPrior, acfg):
    from avatar.prior.data import SYNTH_MOTION_SPACE, load_clip, synthetic_clip

    n = b.train_identities + b.heldout_identities
    if b.data == "procedural":
        clips = [synthetic_clip(b.seed * 10_000 + i, acfg, seconds=b.seconds) for i in range(n)]
        return clips[:b.train_identities], clips[b.train_identities:], SYNTH_MOTION_SPACE, "procedural"

    def folders():
        root = Path(b.synth_dir)
        return sorted(p for p in root.iterdir() if p.is_dir() and ((p / "ground_truth.npz").is_file()
                                                                    or (p / "transforms.json").is_file())) \
            if root.is_dir() else []
    if len(folders()) < n:
        _make_synth(b, n)
    dirs = folders()
    if len(dirs) < n:
        raise ValueError(f"{b.synth_dir}: {len(dirs)} identity folders; need {n}")
    dirs = dirs[:b.train_identities] + dirs[-b.heldout_identities:]
    clips, space = [], None
    for d in dirs:
        c, ms = load_clip(d, acfg)
        if space is not None and ms != space:
            raise ValueError(f"{d}: motion space differs from the other identities'")
        space = ms
        clips.append(c)
    src = clips[0].info.get("source", "?")
    how = ("avatar synth --identities ground truth: landmarks3d -> avatar.data.MotionSpace (not through avatar "
           "capture)" if src == "synth_ground_truth" else "capture folders (avatar capture of avatar synth videos)")
    return clips[:-b.heldout_identities], clips[-b.heldout_identities:], space, f"{how}: {b.synth_dir}"


def _real_audio(b: BenchPrior, prior, ref_clip, w_open, np_: int, acfg) -> Dict[str, Any]:
    """Real recorded speech (several speakers and languages, no motion ground truth): the predicted
    opening's correlation with the audio's RMS envelope (smoothed over 3 frames) and silence/speech
    opening ratio, styled by the first held-out identity's reference."""
    import numpy as np

    from avatar.prior.data import audio_clip_features

    d = Path(b.media_dir) / "audio"
    if not d.is_dir():
        return {}
    from avatar.media.audio import load_audio

    fps = ref_clip.fps
    style = (ref_clip.feats[:np_], ref_clip.motion[:np_])
    zeros = np.zeros(int(10 * SAMPLE_RATE), np.float32)
    f0, p0 = audio_clip_features(zeros, fps, int(10 * fps), acfg)
    sil = float((prior.predict(f0, p0, style)["motion"] @ w_open).clamp_min(0).mean())
    out = {}
    for path in sorted(d.iterdir()):
        if path.suffix.lower() not in (".ogg", ".flac", ".mp3", ".wav"):
            continue
        wav = load_audio(path)
        n = int(len(wav) / SAMPLE_RATE * fps)
        feats, pitch = audio_clip_features(wav, fps, n, acfg)
        op = (prior.predict(feats, pitch, style)["motion"] @ w_open).numpy()
        hop = SAMPLE_RATE / fps
        rms = np.array([np.sqrt(np.mean(wav[int(i * hop):int((i + 1) * hop)] ** 2) + 1e-12) for i in range(n)])
        env = np.convolve(rms, np.ones(3) / 3, mode="same")
        speech = float(np.clip(op, 0, None).mean())
        out[path.name] = {"seconds": round(len(wav) / SAMPLE_RATE, 2), "open_envelope_corr": float(np.corrcoef(op, env)[0, 1]),
                          "mean_opening": speech, "silence_ratio": sil / max(speech, 1e-9)}
    return out


def run_bench(b: BenchPrior) -> Dict[str, Any]:
    import dataclasses

    import numpy as np
    import torch

    from avatar.audio.features import AudioFeatureConfig
    from avatar.prior.api import finetune_prior
    from avatar.prior.model import frame_pitch
    from avatar.prior.trainer import train_prior

    torch.set_num_threads(b.threads)
    t_start = time.time()
    acfg = AudioFeatureConfig()
    train_clips, held, space, source = _load_identities(b, acfg)
    fps = train_clips[0].fps
    t0 = time.time()
    prior = train_prior(train_clips, space, acfg.to_dict(), dataclasses.replace(b.train, seed=b.seed), b.model, None,
                        log=lambda m: print(f"[bench prior] {m}", file=sys.stderr, flush=True))
    t_prior = time.time() - t0
    if b.save_prior:
        prior.save(b.save_prior)
    w_open = torch.as_tensor(opening_readout(space, prior.motion_dim))
    per_id: List[Dict[str, Any]] = []
    np_ = int(round(b.personal_seconds * fps))
    t_personal = t_finetune = 0.0

    def evaluate(c, np_):
        nonlocal t_personal, t_finetune
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
        for name, wav in (("zeros", np.zeros(int(n_sil / fps * SAMPLE_RATE), np.float32)),
                          ("noise_-60dBFS", (10 ** (-60 / 20) * g.standard_normal(int(n_sil / fps * SAMPLE_RATE))).astype(np.float32))):
            from avatar.audio.features import frame_features
            f_ = frame_features(wav, fps, n_sil, acfg)
            p_ = frame_pitch(wav, fps, n_sil)
            for sname, st in (("style", style), ("plain", None)):
                sil[f"{name}_{sname}"] = float((prior.predict(f_, p_, st)["motion"] @ w_open).clamp_min(0).mean())
        speech_open = {"style": float((p_style @ w_open).clamp_min(0).mean()),
                       "plain": float((p_plain @ w_open).clamp_min(0).mean()),
                       "ground_truth": float((gt @ w_open).clamp_min(0).mean())}
        gt_open, pr_open = (gt @ w_open).numpy(), (p_style @ w_open).numpy()
        return {
            "identity": c.name, "test_frames": int(test.num_frames),
            "style": c.info.get("style") or {k: v for k, v in c.info.items() if k.startswith("style")},
            "motion_err_prior_style": _nmse(p_style, gt), "motion_err_prior": _nmse(p_plain, gt),
            "motion_err_personal_only": _nmse(p_personal, gt), "motion_err_prior_finetuned": _nmse(p_ft, gt),
            "mouth_open_corr_prior_style": float(np.corrcoef(gt_open, pr_open)[0, 1]),
            "opening_silence": sil, "opening_speech": speech_open,
            "silence_to_speech_opening_ratio": max(sil["zeros_style"], sil["noise_-60dBFS_style"]) / max(speech_open["style"], 1e-9),
        }

    for c in held:
        if c.num_frames < np_ + 64:
            raise ValueError(f"{c.name}: {c.num_frames} frames; need > {np_ + 64} (personal clip + test)")
        per_id.append(evaluate(c, np_))
    real_clips: Dict[str, Any] = {}
    for d in b.real_captures:
        if not (Path(d) / "transforms.json").is_file():
            real_clips[str(d)] = "missing (avatar capture ../shared/media/video/may_5s.mp4 --out " + str(d) + ")"
            continue
        from avatar.prior.data import clip_from_capture
        rc, rms = clip_from_capture(d, acfg)
        if rms != space:
            real_clips[str(d)] = f"skipped: its motion space differs from the training data's ({space.get('kind', 'MotionSpace')})"
            continue
        real_clips[rc.name] = dict(evaluate(rc, rc.num_frames // 2), personal_frames=rc.num_frames // 2)

    real = _real_audio(b, prior, held[0], w_open, np_, acfg)

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
    for name, r in real_clips.items():
        if isinstance(r, dict):
            for k in ("motion_err_prior_style", "motion_err_prior", "motion_err_personal_only", "motion_err_prior_finetuned",
                      "silence_to_speech_opening_ratio"):
                summary[f"real_{Path(name).name}_{k}"] = r[k]
    if real:
        summary["real_speech_open_envelope_corr"] = float(np.mean([r["open_envelope_corr"] for r in real.values()]))
        summary["silence_to_real_speech_opening_ratio"] = float(np.mean([r["silence_ratio"] for r in real.values()]))
    return {
        "benchmark": "prior",
        "device": device("cpu"),
        "versions": versions(),
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
        "real_captures": real_clips,
        "real_speech": real,
        "summary": summary,
    }
