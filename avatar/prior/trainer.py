"""Training loop of the motion prior, single-process or data-parallel on torch.distributed.

Launch: `avatar prior train ...` (one process), or `torchrun --nproc_per_node N -m avatar prior train ...`
(gloo on CPU, nccl on GPU; rank/world from the torchrun environment). Every rank holds all clips (they
are small per-frame arrays), fits the same normalisation/PCA deterministically, and draws the same
*global* batch each step from a generator seeded by (seed, step); rank r trains on its slice of it, DDP
all-reduces (averages) the gradients. So N processes x batch B follow the same trajectory as one process
with batch N*B (up to float reassociation), and a resumed run continues exactly (the batch of step s
does not depend on history). Rank 0 writes the checkpoints (atomic), everyone waits at a barrier.
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from avatar.prior.augment import augment_feats, resample_frames, stretch_rate
from avatar.prior.config import PriorTrainConfig
from avatar.prior.data import PriorClip
from avatar.prior.gate import VAD_COLUMN, SilenceGateConfig, rest_deviation
from avatar.prior.model import MotionPrior, PriorCheckpointError, plain
from avatar.prior.config import MotionPriorConfig
from avatar.prior.pca import MotionPCA


def train_state_path(out: Path) -> Path:
    """The resumable training checkpoint next to the final prior: prior.pt -> prior.train.pt."""
    out = Path(out)
    return out.with_name(out.stem + ".train" + (out.suffix or ".pt"))


# ---------------------------------------------------------------------------------------------
def setup_distributed(device: str = "auto") -> Tuple[int, int, torch.device, bool]:
    """(rank, world_size, device, initialised_here). Initialises the default process group from the
    torchrun environment (WORLD_SIZE > 1) when it is not initialised yet: nccl with CUDA, else gloo."""
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' requested but torch.cuda.is_available() is False")
    created = False
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        created = True
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", rank % max(1, torch.cuda.device_count())))
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    return rank, world, dev, created


# ---------------------------------------------------------------------------------------------
def _stats(x: torch.Tensor, floor: float = 1e-3) -> Tuple[torch.Tensor, torch.Tensor]:
    x = x.double()
    return x.mean(0).float(), x.std(0).clamp_min(floor).float()


def clip_scale(motion: torch.Tensor) -> float:
    """RMS of a clip's centred motion codes (its overall speaking amplitude)."""
    m = motion.double()
    return float(((m - m.mean(0)) ** 2).sum(1).mean().sqrt().clamp_min(1e-6))


def centred_clip(clip: PriorClip, dev_scale: Optional[float]) -> PriorClip:
    """The training target of a clip: motion codes minus the clip's mean (the per-person offset audio
    cannot predict), scaled to the pool's typical amplitude `dev_scale` (None: unscaled); the opening
    likewise. Audio, blink and pose are unchanged."""
    mc = clip.motion - clip.motion.mean(0)
    f = 1.0 if dev_scale is None else dev_scale / clip_scale(clip.motion)
    op = None if clip.opening is None else (clip.opening - clip.opening.mean()) * f
    return PriorClip(clip.name, clip.feats, clip.pitch, (mc * f).float(), clip.blink, clip.pose, clip.fps,
                     dict(clip.info, scale_factor=f), None if op is None else op.float())


def rest_stats(centred: List[PriorClip], gate: Optional[SilenceGateConfig] = None) -> Dict[str, torch.Tensor]:
    """The silence gate's rest_dev [M] / rest_frames [] (avatar.prior.gate.rest_deviation) from centred
    clips whose prosody carries the VAD column; {} when none does."""
    with_vad = [c for c in centred if c.pitch is not None and c.pitch.shape[1] > VAD_COLUMN]
    if not with_vad:
        return {}
    rest, n = rest_deviation([c.motion for c in with_vad], [c.pitch[:, VAD_COLUMN] for c in with_vad],
                             gate or SilenceGateConfig())
    return {"rest_dev": rest, "rest_frames": torch.tensor(float(n))}


def fit_calibration_stats(clips: List[PriorClip], dev_scale: float) -> Dict[str, torch.Tensor]:
    """Pooled statistics of the raw training clips: motion_mean, dev_std, open_w, open_b, rest_dev,
    rest_frames (see MotionPrior.calib); gain/pose_gain stay 1 until calibrate()."""
    m = clips[0].motion.shape[1]
    mean = torch.cat([c.motion for c in clips]).double().mean(0)
    cen = [centred_clip(c, dev_scale) for c in clips]
    dev = torch.cat([c.motion for c in cen]).double()
    out = {"motion_mean": mean.float(), "dev_std": dev.std(0).clamp_min(1e-6).float(),
           "open_w": torch.zeros(m), "open_b": torch.zeros(()), **rest_stats(cen)}
    with_open = [(c, k) for c, k in zip(clips, cen) if c.opening is not None]
    if with_open:
        x = torch.cat([k.motion for _, k in with_open]).double()
        y = torch.cat([k.opening for _, k in with_open]).double()
        lam = 1e-4 * float((x ** 2).sum(0).mean()) + 1e-9
        w = torch.linalg.solve(x.T @ x + lam * torch.eye(m, dtype=x.dtype), x.T @ y)
        b = torch.stack([c.opening.double().mean() - c.motion.double().mean(0) @ w for c, _ in with_open]).mean()
        out["open_w"], out["open_b"] = w.float(), b.float()
    return out


def calibrate(prior: MotionPrior, clips: List[PriorClip], dev_scale: float, log: Callable[[str], None] = print
              ) -> Dict[str, float]:
    """Amplitude calibration on validation clips (identities not trained on): per-latent gains
    std(true) / std(predicted) (MSE training shrinks predictions by about their correlation), and the
    same per head-pose channel. Variances are pooled over clips, each clip about its own mean.
    Writes prior.calib["gain"], ["pose_gain"]; returns a summary."""
    if not clips:
        return {}
    vt, vp, pt, pp = 0.0, 0.0, 0.0, 0.0
    for c in clips:
        k = centred_clip(c, dev_scale)
        o = prior.predict(k.feats, k.pitch, use_stored_style=False, calibrated=False)
        zt = prior.encode_motion(k.motion)
        zp = o["z"]
        vt = vt + ((zt - zt.mean(0)) ** 2).sum(0)
        vp = vp + ((zp - zp.mean(0)) ** 2).sum(0)
        qt = (k.pose - prior.pose_mean) / prior.pose_std
        qp = (o["head_pose"] - prior.pose_mean) / prior.pose_std
        pt = pt + ((qt - qt.mean(0)) ** 2).sum(0)
        pp = pp + ((qp - qp.mean(0)) ** 2).sum(0)
    gain = (vt / vp.clamp_min(1e-9)).sqrt().clamp(1.0, 2.0)       # per latent, bounded: noise is not amplified
    pgain = (pt / pp.clamp_min(1e-9)).sqrt().clamp(0.5, 4.0)
    # then one factor so the mouth opening read off the codes has the true spread (median over clips)
    w = prior.calib["open_w"]
    if float(w.abs().sum()) > 0:
        ratios = []
        for c in clips:
            k = centred_clip(c, dev_scale)
            o = prior.predict(k.feats, k.pitch, use_stored_style=False, calibrated=False)
            zp = o["z"] * gain
            dev = (zp * prior.pca.scale) @ prior.pca.components
            sp, st = float((dev @ w).std()), float((k.motion @ w).std())
            if sp > 1e-9 and st > 1e-9:
                ratios.append(st / sp)
        if ratios:
            gain = gain * float(np.clip(np.median(ratios), 0.5, 4.0))
    prior.calib["gain"] = gain.float()
    prior.calib["pose_gain"] = pgain.float()
    summary = {"calib_clips": [c.name for c in clips], "gain_mean": float(gain.mean()),
               "gain_pc1": float(gain[0]), "pose_gain_mean": float(pgain.mean())}
    log(f"calibrated on {len(clips)} clips: latent gains mean {summary['gain_mean']:.2f} (PC1 {summary['gain_pc1']:.2f}), "
        f"pose gains mean {summary['pose_gain_mean']:.2f}")
    return summary


def build_prior(clips: List[PriorClip], motion_space: Dict[str, Any], audio_features: Dict[str, Any],
                mcfg: MotionPriorConfig, tcfg: PriorTrainConfig, raw_clips: Optional[List[PriorClip]] = None,
                dev_scale: Optional[float] = None) -> MotionPrior:
    """Fit normalisers and the PCA on the (centred) clips and create an untrained prior (seeded);
    raw_clips (the clips before centring) give the calibration statistics."""
    feats = torch.cat([c.feats for c in clips])
    pitch = torch.cat([c.pitch for c in clips])
    codes = torch.cat([c.motion for c in clips])
    pose = torch.cat([c.pose for c in clips])
    pca = MotionPCA.fit(codes, tcfg.pca_var, tcfg.pca_max_components or None)
    cfg = dataclasses.replace(mcfg, audio_dim=int(feats.shape[1]), pitch_dim=int(pitch.shape[1]) if mcfg.pitch_dim else 0,
                              code_dim=pca.latent_dim)
    am, asd = _stats(feats)
    pm, psd = _stats(pitch)
    qm, qsd = _stats(pose, 1e-4)
    calib = fit_calibration_stats(raw_clips, dev_scale) if raw_clips is not None and dev_scale else None
    ops = [c.opening - c.opening.mean() for c in (raw_clips or []) if c.opening is not None]
    open_sd = float(torch.cat(ops).std()) if ops else None     # the pool's typical opening spread (raw units)
    torch.manual_seed(tcfg.seed)
    return MotionPrior(cfg, pca, motion_space, audio_features, am, asd, pm, psd, qm, qsd,
                       meta={"identities": [c.name for c in clips], "fps": float(clips[0].fps),
                             "frames": int(sum(c.num_frames for c in clips)), "targets": "clip_centred",
                             "dev_scale": dev_scale, "open_dev_std": open_sd},
                       calib=calib)


def check_clips(clips: List[PriorClip], window: int) -> int:
    """Validate a clip list; returns the reference length usable by every clip."""
    if not clips:
        raise ValueError("motion prior: no training clips")
    m = {c.motion.shape[1] for c in clips}
    d = {c.feats.shape[1] for c in clips}
    if len(m) != 1 or len(d) != 1:
        raise ValueError(f"motion prior: clips disagree on motion dim {sorted(m)} or audio-feature dim {sorted(d)}: "
                         + ", ".join(f"{c.name}: M={c.motion.shape[1]} D={c.feats.shape[1]}" for c in clips))
    fps = {round(c.fps, 3) for c in clips}
    if len(fps) != 1:
        raise ValueError(f"motion prior: clips have different fps {sorted(fps)}; capture them at one rate (--fps)")
    short = [f"{c.name} ({c.num_frames})" for c in clips if c.num_frames < window]
    if short:
        raise ValueError(f"motion prior: clips shorter than window_frames={window}: {short}")
    return min(c.num_frames for c in clips)


class _TrainStep(nn.Module):
    """The whole per-batch computation (so DDP sees one forward per backward and every parameter
    takes part, with or without style dropout)."""

    def __init__(self, prior: MotionPrior, tcfg: PriorTrainConfig):
        super().__init__()
        self.prior = prior
        self.tcfg = tcfg

    def forward(self, feats, pitch, codes, blink, pose, ref_feats, ref_codes, drop, gains
                ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        # one batch per ensemble member (leading E): feats [E,B,T,Da], pitch [E,B,T,P], codes [E,B,T,M],
        # blink [E,B,T], pose [E,B,T,6], ref_feats [E,B,R,Da], ref_codes [E,B,R,M], drop [E,B] bool,
        # gains [E,B,K] style augmentation
        t = self.tcfg
        parts = [self._member(i, *(x[i] for x in (feats, pitch, codes, blink, pose, ref_feats, ref_codes, drop, gains)))
                 for i in range(feats.shape[0])]
        parts = {k: torch.stack([q[k] for q in parts]).mean() for k in parts[0]}
        loss = (t.motion_weight * parts["motion"] + t.velocity_weight * parts["velocity"] + t.blink_weight * parts["blink"]
                + t.pose_weight * parts["pose"] + t.open_weight * parts["open"])
        return loss, {k: v.detach() for k, v in parts.items()}

    def _member(self, i, feats, pitch, codes, blink, pose, ref_feats, ref_codes, drop, gains) -> Dict[str, torch.Tensor]:
        """The loss terms of ensemble member i on its own batch (the shapes of forward without E)."""
        p = self.prior
        z = p.encode_motion(codes) * gains[:, None]                                 # [B,T,K]
        style = None
        if p.cfg.style:                                                             # single network only
            ref_z = p.encode_motion(ref_codes) * gains[:, None]
            tokens = p.net.encode_style(p.norm_audio(ref_feats), ref_z)             # [B,S,d]
            null = p.net.null_style[None].expand_as(tokens)
            style = torch.where(drop[:, None, None], null, tokens)
        return self._parts(p.member_forward(i, feats, pitch, style), z, blink, pose)

    def _parts(self, out: Dict[str, torch.Tensor], z: torch.Tensor, blink: torch.Tensor, pose: torch.Tensor
               ) -> Dict[str, torch.Tensor]:
        """The loss terms of one network's output against the whitened targets z [B,T,K]."""
        p = self.prior
        w = p.pca.scale.to(z) ** 2
        w = w / w.sum()
        err = out["motion"] - z
        wo = (p.calib["open_w"].to(z) @ p.pca.components.to(z).T) * p.pca.scale.to(z)   # opening direction in z
        return {"motion": (err ** 2 * w).sum(-1).mean(),
                "velocity": ((err[:, 1:] - err[:, :-1]) ** 2 * w).sum(-1).mean() if err.shape[1] > 1 else err.sum() * 0,
                "blink": F.binary_cross_entropy_with_logits(out["blink_logit"], blink.clamp(0, 1)),
                "pose": ((out["pose"] - (pose - p.pose_mean) / p.pose_std) ** 2).mean(),
                "open": (err @ wo).pow(2).mean() / (wo @ wo).clamp_min(1e-12) if float(wo.abs().sum()) > 0
                else err.sum() * 0}


def sample_global_batch(clips: List[PriorClip], step: int, global_batch: int, window: int, ref: int,
                        tcfg: PriorTrainConfig, member: int = 0) -> List[Tuple[int, int, int, bool, int]]:
    """The global batch of `step` for ensemble member `member` (each has its own stream, member 0 the
    single network's): (clip index, target start, reference start, drop style, augmentation seed) per
    sample; identical on every rank and independent of history (exact resume)."""
    g = torch.Generator().manual_seed(tcfg.seed * 1_000_003 + step + 1 + member * 1_000_000_007)
    out = []
    w = torch.tensor([float(c.num_frames) ** 0.5 for c in clips])   # a clip counts ~ sqrt(its length)
    for _ in range(global_batch):
        ci = int(torch.multinomial(w, 1, generator=g))
        n = clips[ci].num_frames
        s = int(torch.randint(n - window + 1, (1,), generator=g))
        before = max(0, s - ref + 1)                   # ref starts r with r + ref <= s
        after = max(0, n - ref - (s + window) + 1)     # ref starts r >= s + window
        if before + after > 0:
            u = int(torch.randint(before + after, (1,), generator=g))
            r = u if u < before else s + window + (u - before)
        else:                                          # clip too short for a disjoint reference
            r = int(torch.randint(n - ref + 1, (1,), generator=g))
        drop = bool(torch.rand((), generator=g) < tcfg.style_dropout)
        out.append((ci, s, r, drop, int(torch.randint(1 << 31, (1,), generator=g))))
    return out


def _gains(items, k: int, amount: float) -> torch.Tensor:
    """[B, K] per-sample per-component style-augmentation gains exp(U(-amount, amount))."""
    out = []
    for *_, seed in items:
        g = torch.Generator().manual_seed(seed)
        out.append(torch.exp((torch.rand(k, generator=g) * 2 - 1) * amount))
    return torch.stack(out)


def _collate(clips: List[PriorClip], items, window: int, ref: int, dev: torch.device, k: int, tcfg: PriorTrainConfig):
    def stack(get):
        return torch.stack([get(clips[ci], s, r) for ci, s, r, *_ in items]).to(dev)

    # each sample's source span: window x its speed factor (tcfg.speed), cut at the clip's end
    spans = [(clips[ci], s, min(max(2, round(window * stretch_rate(seed, tcfg.speed))), clips[ci].num_frames - s), seed)
             for ci, s, _, _, seed in items]

    def target(name: str):   # [B, window, ...] of the sample windows, resampled from their spans
        out = []
        for c, s, n, seed in spans:
            x = resample_frames(getattr(c, name)[s:s + n], window)
            out.append(augment_feats(x, seed, tcfg.vtlp, tcfg.freq_mask) if name == "feats" else x)
        return torch.stack(out).to(dev)
    return (target("feats"), target("pitch"), target("motion"), target("blink"), target("pose"),
            stack(lambda c, s, r: c.feats[r:r + ref]),
            stack(lambda c, s, r: c.motion[r:r + ref]),
            torch.tensor([d for _, _, _, d, _ in items], dtype=torch.bool, device=dev),
            _gains(items, k, tcfg.style_augment).to(dev))


def lr_at(step: int, tcfg: PriorTrainConfig) -> float:
    if step < tcfg.warmup_steps:
        return tcfg.lr * (step + 1) / tcfg.warmup_steps
    p = (step - tcfg.warmup_steps) / max(1, tcfg.steps - tcfg.warmup_steps)
    f = tcfg.lr_final_fraction
    return tcfg.lr * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def _check_resume(ck: Dict[str, Any], prior: MotionPrior, path: Path) -> None:
    if "train_state" not in ck:
        raise PriorCheckpointError(f"{path}: not a resumable training checkpoint (no train_state)")
    old = MotionPrior.from_checkpoint(ck, str(path))
    if old.cfg != prior.cfg:
        raise PriorCheckpointError(f"{path}: model config differs from this run's ({old.cfg} vs {prior.cfg}); "
                                   "use --no-resume or another --out")
    old.check_motion_space(prior.motion_space, str(path))
    old.check_audio_features(prior.audio_features, str(path))
    if old.meta.get("identities") != prior.meta.get("identities"):
        raise PriorCheckpointError(f"{path}: trained on other clips {old.meta.get('identities')}; "
                                   "use --no-resume or another --out")


def train_prior(clips: List[PriorClip], motion_space: Dict[str, Any], audio_features: Dict[str, Any],
                tcfg: PriorTrainConfig, mcfg: Optional[MotionPriorConfig] = None, out: Optional[Path] = None, *,
                resume: bool = True, init: Optional[MotionPrior] = None, style_ref: Optional[Dict[str, torch.Tensor]] = None,
                meta: Optional[Dict[str, Any]] = None, log: Callable[[str], None] = print,
                calib_clips: Optional[List[PriorClip]] = None) -> MotionPrior:
    """Train (or, with `init`, fine-tune) a prior on `clips`; writes `out` (final prior) and
    train_state_path(out) (resumable) from rank 0. Returns the trained prior (on CPU) on every rank.

    Targets are per-clip centred motion codes scaled to the pool's typical amplitude (centred_clip);
    calib_clips (identities not trained on) calibrate the amplitude after training (calibrate)."""
    rank, world, dev, created = setup_distributed(tcfg.device)
    try:
        raw_clips = clips
        if init is not None and init.meta.get("dev_scale"):
            dev_scale = float(init.meta["dev_scale"])
        else:
            dev_scale = float(np.median([clip_scale(c.motion) for c in raw_clips]))
        clips = [centred_clip(c, dev_scale) for c in raw_clips]
        window = tcfg.window_frames
        min_len = check_clips(clips, window)
        ref = min(tcfg.ref_frames, min_len)
        if init is not None:
            prior = MotionPrior.from_checkpoint(init.checkpoint(), "init")
            if prior.motion_dim != clips[0].motion.shape[1] or prior.cfg.audio_dim != clips[0].feats.shape[1]:
                raise PriorCheckpointError(f"fine-tune: the prior expects motion dim {prior.motion_dim} and audio dim "
                                           f"{prior.cfg.audio_dim}; the clip has {clips[0].motion.shape[1]} and "
                                           f"{clips[0].feats.shape[1]}")
            prior.check_motion_space(motion_space, clips[0].name)
            prior.check_audio_features(audio_features, clips[0].name)
            prior.meta = dict(prior.meta, finetuned_on=[c.name for c in clips])
            # the rest deviation stays the pooled one (avatar.prior.gate: a person's own pauses are mostly
            # breaths, mouth open: dfrf_cnn2's rest would sit above its speech mean)
        else:
            prior = build_prior(clips, motion_space, audio_features, mcfg or MotionPriorConfig(), tcfg,
                                raw_clips=raw_clips, dev_scale=dev_scale)
        if meta:
            prior.meta.update(plain(meta))
        if style_ref is not None:
            prior.style_ref = style_ref
        prior.to(dev)
        opt = torch.optim.AdamW(prior.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
        start = 0
        ema_state = None
        state_path = train_state_path(out) if out is not None else None
        if resume and state_path is not None and state_path.is_file():
            ck = torch.load(state_path, map_location="cpu", weights_only=True)
            _check_resume(ck, prior, state_path)
            prior.net.load_state_dict(ck["state_dict"])
            opt.load_state_dict(ck["train_state"]["optimizer"])
            start = int(ck["train_state"]["step"])
            ema_state = ck["train_state"].get("ema")
            if ck["train_state"].get("world_size", world) * ck["train_state"].get("batch_size", tcfg.batch_size) \
                    != world * tcfg.batch_size and rank == 0:
                log(f"warning: resuming with a different global batch than {state_path} was trained with")
            if rank == 0:
                log(f"resumed {state_path} at step {start}/{tcfg.steps}")
        step_mod = _TrainStep(prior, tcfg)
        model = step_mod
        if world > 1:
            model = nn.parallel.DistributedDataParallel(step_mod, device_ids=[dev.index] if dev.type == "cuda" else None)

        # EMA of the network weights (tcfg.ema > 0): float copies, updated after every step, identical on
        # every rank (the replicas are identical), saved in the training state for an exact resume
        ema = None
        if tcfg.ema > 0:
            if not 0 < tcfg.ema < 1:
                raise ValueError(f"PriorTrainConfig.ema must be in [0, 1), got {tcfg.ema}")
            ema = {k: v.detach().clone() for k, v in prior.net.state_dict().items()}
            if ema_state is not None:
                ema = {k: ema_state[k].to(v) for k, v in ema.items()}

        def save(step: int, final: bool) -> None:
            if rank != 0 or out is None:
                return
            state = {"step": step, "optimizer": opt.state_dict(), "config": dataclasses.asdict(tcfg),
                     "world_size": world, "batch_size": tcfg.batch_size}
            if ema is not None:
                state["ema"] = {k: v.detach().cpu() for k, v in ema.items()}
            prior.save(state_path, extra={"train_state": state})
            if final:
                prior.save(out)

        gb = tcfg.batch_size * world
        prior.train()
        running: Dict[str, float] = {}
        for step in range(start, tcfg.steps):
            torch.manual_seed(tcfg.seed * 7919 + step * 31 + rank)     # dropout noise: a function of (step, rank)
            per_member = []
            for e in range(prior.cfg.members):
                items = sample_global_batch(clips, step, gb, window, ref, tcfg, e)[rank * tcfg.batch_size:(rank + 1) * tcfg.batch_size]
                per_member.append(_collate(clips, items, window, ref, dev, prior.cfg.code_dim, tcfg))
            batch = [torch.stack(x) for x in zip(*per_member)]                 # leading E: one batch per member
            for gparam in opt.param_groups:
                gparam["lr"] = lr_at(step, tcfg)
            loss, parts = model(*batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"motion prior: non-finite loss at step {step} ({ {k: float(v) for k, v in parts.items()} }); "
                                         f"the last good checkpoint is {state_path}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tcfg.grad_clip > 0:
                for net in prior.member_nets:                                  # members stay independent
                    nn.utils.clip_grad_norm_(net.parameters(), tcfg.grad_clip)
            opt.step()
            if ema is not None:
                with torch.no_grad():
                    for k, v in prior.net.state_dict().items():
                        if v.dtype.is_floating_point:
                            ema[k].mul_(tcfg.ema).add_(v.detach(), alpha=1 - tcfg.ema)
                        else:
                            ema[k].copy_(v)
            for k, v in parts.items():
                running[k] = running.get(k, 0.0) + float(v)
            if rank == 0 and tcfg.log_every and (step + 1) % tcfg.log_every == 0:
                log(f"step {step + 1}/{tcfg.steps} lr {lr_at(step, tcfg):.2e} "
                    + " ".join(f"{k} {v / tcfg.log_every:.4f}" for k, v in running.items()))
                running = {}
            if tcfg.checkpoint_every and (step + 1) % tcfg.checkpoint_every == 0 and step + 1 < tcfg.steps:
                save(step + 1, False)
                if world > 1:
                    dist.barrier()
        if ema is not None:   # the saved prior carries the averaged weights; the training state the last step's
            save(tcfg.steps, False)
            prior.net.load_state_dict(ema)
            prior.meta["ema"] = float(tcfg.ema)
            if rank == 0:
                log(f"weights: EMA (decay {tcfg.ema}) of the training trajectory")
        if calib_clips:
            prior.eval()
            prior.meta["calibration"] = plain(calibrate(prior, calib_clips, dev_scale, log=log if rank == 0 else (lambda m: None)))
        if ema is None:
            save(tcfg.steps, True)
        elif rank == 0 and out is not None:
            prior.save(out)
        if world > 1:
            dist.barrier()
        prior.eval()
        return prior.cpu()
    finally:
        if created:
            dist.destroy_process_group()
