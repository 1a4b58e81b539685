"""`avatar train DATA [--preset NAME] [--resume] [--out DIR]`: capture folder -> avatar checkpoint.

One trainer; the stages (static canonical avatar, deformation, joint fine-tune) are `phases` of the
config. Output folder:
    config.yaml                resolved TrainConfig (reload with train_config.load_config(path))
    checkpoints/step_NNNNNN.pt training checkpoints (model + optimizer + strategy state + RNG + step), atomic
    avatar.pt                  final avatar checkpoint (AvatarModel.load)
    previews/step_NNNNNN.png   predicted | ground truth of a held-out frame
    eval.json                  held-out metrics (avatar.train.metrics)
    tb/                        tensorboard events (logger="tensorboard")

Python API (used by `avatar demo`):
    train(data_dir, out_dir, preset="tiny", overrides=None, progress=True, resume=False) -> Path (avatar.pt)
"""
from __future__ import annotations

import dataclasses
import random
import re
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from avatar.data.schema import LABELS

TRAIN_CKPT_FORMAT = "avatar-train-checkpoint"
TRAIN_CKPT_VERSION = 1


class TrainingError(RuntimeError):
    """Training cannot continue (non-finite loss, bad resume folder); the message says what to do."""


def _import_torch():
    import torch

    return torch


# ---- model construction ---------------------------------------------------------------------------------
def init_landmarks(ds, train_idx) -> Optional[np.ndarray]:
    """Face landmarks [478,3] in the head frame to seed the Gaussians: the person's median tracked 3D
    landmarks when the capture has them, else the canonical face."""
    tracks = getattr(ds, "tracks", None) or {}
    lm3 = tracks.get("landmarks3d")
    if lm3 is not None and len(lm3):
        arr = np.asarray(lm3, np.float32)[np.asarray(train_idx)]
        med = np.median(arr, 0)
        if np.isfinite(med).all():
            return med
    try:
        from avatar.data.face_model import CANONICAL

        return np.asarray(CANONICAL, np.float32)
    except Exception:  # face model not available: random/shell init only
        return None


def torso_points(data, ref_frame: int, rng: np.random.Generator, n: int = 4000) -> Optional[np.ndarray]:
    """Torso pixels (mask label LABELS["torso"]) of frame `ref_frame` unprojected to the head-centre depth (+2 cm),
    in head coordinates [T,3]; None when the frame has no torso pixels."""
    m = data.masks[ref_frame].numpy()
    ys, xs = np.nonzero(m == LABELS["torso"])
    if len(xs) == 0:
        return None
    k = rng.choice(len(xs), min(n, len(xs)), replace=False)
    V = data.viewmats[ref_frame].numpy().astype(np.float64)
    K = data.Ks[ref_frame].numpy().astype(np.float64)
    z = V[2, 3] + 0.02 + rng.normal(0, 0.01, len(k))
    u, v = xs[k] + 0.5, ys[k] + 0.5
    cam = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], 1)
    return ((cam - V[:3, 3]) @ V[:3, :3]).astype(np.float32)  # R^T (x - t)


def build_model(cfg, ds, data, ref_frame: Optional[int] = None):
    """A fresh AvatarModel for `cfg` (TrainConfig) and the frames `data` (FrameData)."""
    torch = _import_torch()
    from avatar.model.avatar import AvatarModel
    from avatar.model.gaussians import init_gaussians

    mcfg = cfg.model
    mcfg.audio_dim = int(data.audio.shape[-1])
    mcfg.motion_dim = int(data.motion.shape[-1]) if (data.motion is not None and mcfg.deform.use_motion) else 0
    torch.manual_seed(cfg.seed)
    tp = None
    if ref_frame is not None and mcfg.gaussians.num_torso > 0:
        tp = torso_points(data, ref_frame, np.random.default_rng(cfg.seed))
    g = init_gaussians(mcfg.gaussians, init_landmarks(ds, data.train_idx), seed=cfg.seed, torso_points=tp)
    ms = getattr(ds, "motion_space", None)
    if ms is not None and hasattr(ms, "to_dict"):
        ms = ms.to_dict()
    return AvatarModel(mcfg, g, audio_config=dataclasses.asdict(cfg.audio_features),
                       motion_space=ms if isinstance(ms, dict) else None)


def reference_viewmats(data, cam_ids: np.ndarray):
    """Per camera id: (frame, viewmat [4,4]) of the training frame closest to that camera's mean viewmat
    (the pose in whose head frame the torso Gaussians live)."""
    torch = _import_torch()
    refs = {}
    tr = np.asarray(data.train_idx)
    for c in np.unique(cam_ids):
        idx = tr[cam_ids[tr] == c] if (cam_ids[tr] == c).any() else np.nonzero(cam_ids == c)[0]
        V = data.viewmats[torch.from_numpy(idx)]
        k = int(((V - V.mean(0)) ** 2).sum((1, 2)).argmin())
        refs[int(c)] = (int(idx[k]), V[k].clone())
    return refs


def prepare_prior(cfg, ds, out_dir, reuse_finetuned: bool = False, log=None
                  ) -> Tuple[Optional[np.ndarray], Dict[str, str]]:
    """`avatar train --prior`: the deformation net's motion input np.float32 [F, M] in the prior's motion
    space (avatar.prior.api.motion_for_training; PriorCheckpointError when the capture's motion space
    is not the prior's) and the checkpoint meta that lets `avatar drive` find the prior:
    {"prior": the prior to drive with (the fine-tuned one with cfg.prior_finetune), "prior_generic": cfg.prior}.
    Switches cfg.model.deform.use_motion on. (None, {}) without cfg.prior."""
    if not cfg.prior:
        return None, {}
    from avatar.prior.model import PriorCheckpointError

    from avatar.prior.api import resolve_prior

    if str(cfg.prior) in ("shipped", "default"):
        if resolve_prior(cfg.prior) is None:
            raise TrainingError(f"prior: {cfg.prior!r} asks for the prior shipped with the package, which this "
                                "install lacks (avatar/prior/weights/prior.pt); pass a prior checkpoint or none")
        if not getattr(ds, "has_audio", True):
            if log:
                log("the capture has no audio: training without the shipped motion prior")
            return None, {}
    elif str(cfg.prior).lower() in ("none", "off", "no"):
        return None, {}
    generic = resolve_prior(cfg.prior).expanduser().resolve()
    cfg.model.deform.use_motion = True
    try:
        return _prior_motion(cfg, ds, out_dir, generic, reuse_finetuned, log)
    except PriorCheckpointError as e:
        raise PriorCheckpointError(f"--prior {cfg.prior}: cannot be used with this capture: {e}") from e


def _prior_motion(cfg, ds, out_dir, generic: Path, reuse_finetuned: bool, log):
    from avatar.prior.api import finetune_on_capture, motion_for_training

    use = generic
    if cfg.prior_finetune:
        root = getattr(ds, "root", None)
        if root is None:
            raise TrainingError("prior_finetune needs a capture folder (the dataset has no root folder)")
        motion_for_training(generic, ds)  # motion-space check before spending time on fine-tuning
        use = (Path(out_dir) / "prior_finetuned.pt").resolve()
        if not (reuse_finetuned and use.is_file()):
            if log:
                log(f"fine-tuning the prior {generic} on {root} ({cfg.prior_finetune_steps} steps)")
            finetune_on_capture(generic, root, use, steps=cfg.prior_finetune_steps)
    motion = motion_for_training(use, ds, source=cfg.prior_motion)  # [F, M]
    return motion, {"prior": str(use), "prior_generic": str(generic)}


GAUSSIAN_GROUPS = ("means", "quats", "log_scales", "opacities", "colors")
CANONICAL_GROUPS = GAUSSIAN_GROUPS + ("triplane", "color_head")
DEFORM_GROUPS = ("audio", "face_deform", "mouth_deform", "triplane")  # the triplane feeds the deformation too


def make_optimizer(model, cfg):
    """Adam with one named param group per part (order fixed: resume relies on it)."""
    torch = _import_torch()
    o = cfg.optim
    ext = cfg.strategy.scene_extent
    lrs = {"means": o.lr_means * ext, "quats": o.lr_quats, "log_scales": o.lr_scales,
           "opacities": o.lr_opacities, "colors": o.lr_colors}
    groups = [{"name": k, "params": [model.gaussians.params[k]], "lr": lrs[k], "base_lr": lrs[k]}
              for k in GAUSSIAN_GROUPS]
    for name, mod, lr in (("triplane", model.triplane, o.lr_triplane), ("color_head", model.color_head, o.lr_color_head),
                          ("audio", model.audio_encoder, o.lr_audio), ("face_deform", model.face_deform, o.lr_deform),
                          ("mouth_deform", model.mouth_deform, o.lr_deform)):
        groups.append({"name": name, "params": list(mod.parameters()), "lr": lr, "base_lr": lr})
    return torch.optim.Adam(groups, eps=1e-15)


# ---- the trainer ------------------------------------------------------------------------------------------
class Trainer:
    """Trains an AvatarModel on a capture dataset object (avatar.data API) into `out_dir`."""

    def __init__(self, cfg, dataset, out_dir, progress: bool = True, writer=None, resume: bool = False,
                 make_detector=None):
        torch = _import_torch()
        from avatar.train.frames import load_frames
        from avatar.model.strategy import DensifyStrategy

        self.cfg = cfg
        self.ds = dataset
        self.out = Path(out_dir)
        self.make_detector = make_detector  # landmark detector factory for the held-out lip metrics (or None)
        self.progress = progress
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        from avatar.model.device import resolve_device

        dev, why = resolve_device(cfg.device)
        self.device = torch.device(dev)
        if progress:
            print(f"[train] device: {dev} ({why})", flush=True)
        # --prior: motion codes in the prior's space drive the deformation; meta tells `avatar drive` the prior
        motion, self.prior_meta = prepare_prior(cfg, dataset, self.out, reuse_finetuned=resume,
                                                log=(lambda m: print(f"[train] {m}")) if progress else None)
        self.data = load_frames(dataset, cfg.data, cfg.loss, cfg.audio_features, cfg.model.audio.window,
                                cfg.model.deform.use_motion, motion=motion)
        if len(self.data.train_idx) == 0:
            raise TrainingError("the capture's train split is empty")
        self.cam_ids = np.asarray(getattr(dataset, "camera_ids", np.zeros(dataset.num_frames)), np.int64)
        self.torso_refs = reference_viewmats(self.data, self.cam_ids)  # {camera id: (frame, viewmat [4,4])}
        main_cam = int(np.bincount(self.cam_ids[self.data.train_idx]).argmax())
        self.model = build_model(cfg, dataset, self.data, ref_frame=self.torso_refs[main_cam][0]).to(self.device)
        with torch.no_grad():
            self.model.torso_ref.copy_(self.torso_refs[main_cam][1])
        motion_meta = {}
        if self.data.motion is not None and self.model.cfg.motion_dim:
            tr = self.data.motion[torch.from_numpy(self.data.train_idx)]  # [T, M] the person's training codes
            self.model.set_motion_normalisation(tr)
            self._init_skinning(dataset)
            # for the motion prior (avatar.runtime.sources.prior_motion): the person's code statistics
            motion_meta = {"motion_mean": tr.mean(0).tolist(), "motion_std": tr.std(0).tolist()}
        # what `avatar drive/serve/export` need to render this avatar without its capture folder:
        # the video frame rate and the main camera's reference view at the training resolution
        ref_frame, ref_view = self.torso_refs[main_cam]
        if self.data.crop is not None:  # the face window trained on (avatar.runtime.heldout.CaptureView)
            motion_meta["crop"] = [int(v) for v in self.data.crop]
        self.render_meta = {**motion_meta, "fps": float(dataset.fps), "width": int(self.data.width),
                            "height": int(self.data.height),
                            "viewmat": np.asarray(torch.as_tensor(ref_view).cpu(), np.float32).tolist(),
                            "K": np.asarray(torch.as_tensor(self.data.Ks[ref_frame]).cpu(), np.float32).tolist()}
        self.opt = make_optimizer(self.model, cfg)
        self.strategy = DensifyStrategy(cfg.strategy)
        self.sstate = self.strategy.initialize_state(len(self.model.gaussians), self.device)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.writer = writer
        self.history: List[Dict[str, float]] = []
        self._bg = self.data.background.to(self.device)

    def _init_skinning(self, ds) -> None:
        """Landmark skinning (model.deform.skin): the person's median expression landmarks and the metric
        size of a motion-code unit (inter-ocular distance / MotionSpace.scale, the codes' definition)."""
        K = self.model.skin_points.shape[0]
        ms = self.model.motion_space or {}
        lm = init_landmarks(ds, self.data.train_idx)
        idx = list(ms.get("indices") or [])
        if K == 0 or lm is None or len(idx) != K or not ms.get("scale"):
            return
        iod = float(np.linalg.norm(lm[33] - lm[263]))  # the outer eye corners (MotionSpace's normalisation)
        self.model.set_skinning(_import_torch().from_numpy(np.ascontiguousarray(lm, np.float32)),
                                iod / float(ms["scale"]))

    # -- checkpoints --
    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    def checkpoint_paths(self) -> List[Path]:
        paths = [p for p in self.ckpt_dir.glob("step_*.pt") if re.fullmatch(r"step_\d+\.pt", p.name)]
        return sorted(paths, key=lambda p: int(p.stem.split("_")[1]))

    def save_checkpoint(self) -> Path:
        torch = _import_torch()
        from avatar.io.atomic import atomic_path
        from avatar.model.config import to_dict

        d = self.model.checkpoint_dict(meta={"step": self.step, **self.prior_meta, **self.render_meta})
        d["train"] = {
            "format": TRAIN_CKPT_FORMAT, "version": TRAIN_CKPT_VERSION, "step": self.step,
            "config": to_dict(self.cfg),
            "optimizer": self.opt.state_dict(),
            "strategy_state": {k: v.detach().cpu().clone() for k, v in self.sstate.items()},
            "rng": {"torch": torch.get_rng_state(), "generator": self.gen.get_state(),
                    "numpy": _np_state(), "python": _py_state()},
        }
        path = self.ckpt_dir / f"step_{self.step:06d}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, fsync=True) as tmp:
            torch.save(d, tmp)
        for old in self.checkpoint_paths()[:-max(1, self.cfg.keep_checkpoints)]:
            old.unlink(missing_ok=True)
        return path

    def load_checkpoint(self, path: Path) -> None:
        torch = _import_torch()
        from avatar.model.avatar import AvatarModel

        d = torch.load(path, map_location="cpu", weights_only=True)
        tr = d.get("train") if isinstance(d, dict) else None
        if not tr or tr.get("format") != TRAIN_CKPT_FORMAT:
            raise TrainingError(f"{path}: not a training checkpoint (cannot resume from it)")
        if int(tr.get("version", 0)) > TRAIN_CKPT_VERSION:
            raise TrainingError(f"{path}: training checkpoint version {tr.get('version')} is newer than this code")
        self.model = AvatarModel.from_checkpoint_dict(d, str(path)).to(self.device).train()
        self.opt = make_optimizer(self.model, self.cfg)
        self.opt.load_state_dict(tr["optimizer"])
        self.sstate = {k: v.to(self.device) for k, v in tr["strategy_state"].items()}
        torch.set_rng_state(tr["rng"]["torch"])
        self.gen.set_state(tr["rng"]["generator"])
        _set_np_state(tr["rng"]["numpy"])
        _set_py_state(tr["rng"]["python"])
        self.step = int(tr["step"])

    def torso_transform(self, i: int):
        """[4,4] torso -> head coordinates for frame i (torso fixed relative to frame i's camera)."""
        torch = _import_torch()
        return (torch.linalg.inv(self.data.viewmats[i]) @ self.torso_refs[int(self.cam_ids[i])][1]).to(self.device)

    # -- one step --
    def _lrs(self, phase) -> Dict[str, float]:
        c = self.cfg
        T = max(1, c.total_steps)
        t = min(1.0, self.step / T)
        ext = c.strategy.scene_extent
        lr_means = c.optim.lr_means * ext * (c.optim.lr_means_final / c.optim.lr_means) ** t
        return {"means": lr_means * phase.lr_scale}

    def train_step(self) -> Dict[str, float]:
        torch = _import_torch()
        from avatar.train.metrics import psnr_from_mse, ssim

        c, d, m = self.cfg, self.data, self.model
        phase = c.phase_at(self.step)
        use_deform = phase.deform and not c.static
        train_canonical = phase.train_canonical or c.static
        train_deform = phase.train_deform and not c.static
        i = int(d.train_idx[int(torch.randint(len(d.train_idx), (1,), generator=self.gen))])
        dev = self.device
        gt = d.image(i).to(dev)  # [h,w,3]
        mask = d.masks[i].to(dev)
        self.opt.zero_grad(set_to_none=True)
        latent = m.encode_audio(d.audio[i].to(dev)) if use_deform else None
        motion = d.motion[i].to(dev) if (d.motion is not None and use_deform) else None
        try:
            out = m.render(d.viewmats[i:i + 1].to(dev), d.Ks[i:i + 1].to(dev), d.width, d.height,
                           audio_latent=latent, motion=motion, blink=d.blink[i].to(dev), background=self._bg,
                           use_deform=use_deform, backend=c.backend, torso_transform=self.torso_transform(i))
        except ValueError as e:  # the rasterizer refuses NaN/inf inputs: the model has diverged
            if "non-finite" not in str(e):
                raise
            self._non_finite(f"non-finite Gaussians ({e})", phase, i)
        pred = out["rgb"][0]
        L = c.loss
        w = 1.0 + L.mouth_weight * (mask == LABELS["mouth"]).float() + L.lip_weight * d.lips[i].to(dev).float()  # [h,w]
        l1 = ((pred - gt).abs().mean(-1) * w).sum() / w.sum()
        loss = (1 - L.ssim_weight) * l1
        if L.ssim_weight > 0:
            loss = loss + L.ssim_weight * (1 - ssim(pred, gt))
        if L.alpha_weight > 0:
            loss = loss + L.alpha_weight * (out["alpha"][0, ..., 0] - (mask > 0).float()).abs().mean()
        posed = out["posed"]
        if use_deform and L.deform_weight > 0:
            loss = loss + L.deform_weight * posed["d_means"].abs().mean() / m.cfg.deform.max_offset
        if L.opacity_weight > 0:
            loss = loss + L.opacity_weight * posed["opacities"].mean()
        if L.scale_weight > 0:
            loss = loss + L.scale_weight * posed["scales"].mean() / m.cfg.gaussians.init_scale
        if not torch.isfinite(loss):
            self._non_finite(f"non-finite loss ({float(loss.detach())})", phase, i)
        loss.backward()
        trained = set()
        if train_canonical:
            trained.update(CANONICAL_GROUPS)
        if train_deform:
            trained.update(DEFORM_GROUPS)
        lr_over = self._lrs(phase)
        for g in self.opt.param_groups:
            if g["name"] not in trained:
                for p in g["params"]:
                    p.grad = None
            g["lr"] = lr_over.get(g["name"], g["base_lr"] * phase.lr_scale)
        self.opt.step()
        if train_canonical:
            self.strategy.accumulate(self.sstate, out["views"], d.width, d.height)
            before = len(m.gaussians)
            self.strategy.step(m.gaussians, self.opt, self.sstate, self.step + 1, self.gen)
            if len(m.gaussians) != before:
                m.invalidate_cache()
        self.step += 1
        mse = float(((pred.detach() - gt) ** 2).mean())
        return {"loss": float(loss.detach()), "l1": float(l1.detach()), "psnr": psnr_from_mse(mse),
                "num_gaussians": float(len(m.gaussians)), "deform": float(use_deform)}

    def _non_finite(self, what: str, phase, frame: int):
        last = self.checkpoint_paths()
        raise TrainingError(
            f"{what} at step {self.step} (phase {phase.name!r}, frame {frame}); training stopped. "
            f"Last good checkpoint: {last[-1] if last else 'none yet'} (kept). Lower the learning rates "
            f"(optim.*) in {self.out / 'config.yaml'} and continue with --resume, or start again.")

    # -- previews --
    def write_preview(self) -> Optional[Path]:
        from avatar.media.image import save_image
        torch = _import_torch()

        d = self.data
        idx = d.test_idx if len(d.test_idx) else d.train_idx
        i = int(idx[len(idx) // 2])
        use_deform = not self.cfg.static and self.cfg.phase_at(max(0, self.step - 1)).deform
        self.model.eval()
        with torch.no_grad():
            out = self.model.render(d.viewmats[i:i + 1].to(self.device), d.Ks[i:i + 1].to(self.device), d.width,
                                    d.height, audio_latent=self.model.encode_audio(d.audio[i].to(self.device))
                                    if use_deform else None,
                                    motion=d.motion[i].to(self.device) if (d.motion is not None and use_deform) else None,
                                    blink=d.blink[i].to(self.device), background=self._bg, use_deform=use_deform,
                                    backend=self.cfg.backend, torso_transform=self.torso_transform(i))
        self.model.train()
        pred = out["rgb"][0].clamp(0, 1).cpu().numpy()
        sheet = np.concatenate([pred, d.image(i).numpy()], 1)
        path = save_image(self.out / "previews" / f"step_{self.step:06d}.png", sheet)
        if self.writer is not None:
            self.writer.image("preview", sheet, self.step)
        return path

    # -- the loop --
    def run(self, resume: bool = False, stop_after: Optional[int] = None, callback=None) -> Path:
        """Train to cfg.total_steps (or `stop_after` steps from now); returns the avatar.pt path (or, when
        stopped early by stop_after, the training checkpoint). callback(step, stats) runs after each step."""
        from avatar.train.writers import make_writer
        from avatar.train.config import save_config
        from avatar.model.config import to_dict

        c = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            ck = self.checkpoint_paths()
            if ck:
                self.load_checkpoint(ck[-1])
        save_config(c, self.out / "config.yaml")
        if self.writer is None:
            self.writer = make_writer(c.logger, self.out, to_dict(c))
        total = c.total_steps
        end = total if stop_after is None else min(total, self.step + stop_after)
        from avatar.io.progress import Progress

        # a bar on a terminal, else a line every 5 s; --no-progress: a plain line every 30 s, never silent
        bar = Progress(total, "train", unit="step", initial=self.step, every_s=5.0 if self.progress else 30.0,
                       bar=None if self.progress else False)
        t0 = time.time()
        ema = None
        try:
            while self.step < end:
                stats = self.train_step()
                if callback is not None:
                    callback(self.step, stats)
                ema = stats if ema is None else {k: 0.9 * ema[k] + 0.1 * v for k, v in stats.items()}
                if self.step % max(1, c.log_every) == 0 or self.step == end:
                    self.history.append({"step": self.step, **stats})
                    self.writer.scalars({f"train/{k}": v for k, v in stats.items()}, self.step)
                bar.set_postfix(phase=c.phase_at(self.step - 1).name, loss=f"{ema['loss']:.4f}",
                                psnr=f"{ema['psnr']:.2f}", gaussians=len(self.model.gaussians))
                bar.update(self.step)
                if self.step % c.checkpoint_every == 0 and self.step < total:
                    self.save_checkpoint()
                if c.preview_every and self.step % c.preview_every == 0 and self.step < total:
                    self.write_preview()
        finally:
            bar.close()
        self.train_seconds = time.time() - t0
        if self.step < total:  # stopped early on request
            self.save_checkpoint()
            return self.checkpoint_paths()[-1]
        return self.finish()

    def calibrate_skinning(self) -> Optional[Dict[str, float]]:
        """cfg.skin_calibration_frames: the skinning gain from evenly spaced training frames
        (avatar.train.calibrate); None when off, without a detector, skinning or tracked motion."""
        n = self.cfg.skin_calibration_frames
        d = self.data
        if (not n or self.make_detector is None or self.cfg.static or d.motion is None
                or not self.model.skin_points.shape[0] or not len(d.train_idx)):
            return None
        from avatar.train.calibrate import calibrate_skin_gain

        tr = np.asarray(d.train_idx)
        pick = tr[np.linspace(0, len(tr) - 1, min(n, len(tr))).round().astype(int)]
        return calibrate_skin_gain(self.model, d, pick, self.make_detector, self.cfg.backend,
                                   log=(lambda m: print(f"[train] {m}", flush=True)) if self.progress else None)

    def heldout_audio(self, idx) -> Optional[np.ndarray]:
        """The audio [S] 16 kHz under frames idx when they are one contiguous run (else None)."""
        from avatar.audio.timeline import contiguous_audio, frame_sample

        first = frame_sample(int(idx[0]), self.ds.fps) if len(idx) else 0
        return contiguous_audio(getattr(self.ds, "audio", None), self.ds.fps, idx, first)

    def finish(self) -> Path:
        from avatar.train.metrics import evaluate, write_json

        calibration = self.calibrate_skinning()
        self.save_checkpoint()
        path = self.model.save(self.out / "avatar.pt", meta={"step": self.step, **self.prior_meta, **self.render_meta})
        self.write_preview()
        d = self.data
        idx = d.test_idx if len(d.test_idx) else d.train_idx
        if self.cfg.eval_max_frames and len(idx) > self.cfg.eval_max_frames:
            idx = idx[np.linspace(0, len(idx) - 1, self.cfg.eval_max_frames).round().astype(int)]
        res = evaluate(self.model, d, idx, use_deform=not self.cfg.static, backend=self.cfg.backend,
                       make_detector=self.make_detector, audio=self.heldout_audio(idx))
        res["split"] = "test" if len(d.test_idx) else "train"
        res["steps"] = self.step
        res["num_gaussians"] = len(self.model.gaussians)
        res["train_seconds"] = getattr(self, "train_seconds", None)
        res["skin_calibration"] = calibration
        write_json(res, self.out / "eval.json")
        self.eval = res
        self.writer.scalars({f"eval/{k}": v for k, v in res.items() if isinstance(v, float)}, self.step)
        self.writer.close()
        return path


def _np_state():
    torch = _import_torch()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _set_np_state(s):
    np.random.set_state((s["name"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["cached"]))


def _py_state():
    v, st, g = random.getstate()
    return {"version": v, "state": list(st), "gauss": g}


def _set_py_state(s):
    random.setstate((s["version"], tuple(s["state"]), s["gauss"]))


# ---- public API -------------------------------------------------------------------------------------------
def train(data_dir, out_dir, preset: Optional[str] = "tiny", overrides: Optional[Dict[str, Any]] = None,
          progress: bool = True, resume: bool = False, dataset=None, config=None, make_detector=None) -> Path:
    """Train an avatar from a capture folder; returns the final avatar checkpoint (out_dir/avatar.pt).

    preset: name in configs/ ("tiny", "phone", "multiview", "quality") or a YAML path. overrides: nested or
    dotted keys over the preset, e.g. {"phases": [...], "loss.ssim_weight": 0.1}. resume: continue from the
    newest checkpoint in out_dir/checkpoints using the config saved there (preset/overrides ignored).
    config: a resolved TrainConfig (then preset/overrides are ignored; `avatar train` passes its flags' one).
    make_detector: landmark detector factory for the held-out lip-sync metrics (avatar.eval); None skips them.
    dataset: an already-loaded dataset object (then data_dir is only used for messages).
    Raises TrainingError (non-finite loss: the last good checkpoint is kept), avatar.data.DatasetError,
    ConfigError.
    """
    from avatar.train.config import config_from_dict, load_config, read_yaml

    out_dir = Path(out_dir)
    if resume and (out_dir / "config.yaml").is_file():
        cfg = config_from_dict(read_yaml(out_dir / "config.yaml"), str(out_dir / "config.yaml"))
    elif config is not None:
        cfg = config.validate()
    else:
        cfg = load_config(preset, overrides)
    if dataset is None:
        from avatar.data import load_capture

        dataset = load_capture(Path(data_dir))
    trainer = Trainer(cfg, dataset, out_dir, progress=progress, resume=resume, make_detector=make_detector)
    return trainer.run(resume=resume)


