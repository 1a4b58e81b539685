"""AvatarModel: canonical Gaussians + hash triplane + audio encoder + deformation (face and mouth branches).

Inference API (used by `avatar drive/serve/export`):

    model = AvatarModel.load("outputs/run/avatar.pt")            # torch.load(weights_only=True), eval mode
    feats = frame_features(wav16k, fps, F, model.audio_config)      # [F, D] (avatar.audio.features)
    wins = feature_windows(feats, model.window)                     # [F, 2k+1, D]
    rgb, alpha = model.render_frame(viewmats, Ks, W, H, audio_window=wins[t], motion=None, blink=0.0,
                                    background=bg)                  # [C,H,W,3], [C,H,W,1]
    # streaming: latents = model.encode_audio(wins[a:b]) once per chunk, then render_frame(audio_latent=z)

Rendering composites two layers: the inside-mouth branch (Gaussians with region label 3, deformed by their
own net) and, in front of it, the face/head/torso Gaussians:
    rgb = rgb_face + (1 - a_face) * (rgb_mouth + (1 - a_mouth) * background)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from avatar.model.audio_encoder import AudioEncoder
from avatar.model.config import ModelConfig, from_dict, to_dict
from avatar.model.deform import DeformationNet
from avatar.data.cameras import quat_mul, rotmat_to_quat
from avatar.data.schema import LABELS
from avatar.io.atomic import atomic_path
from avatar.model.gaussians import Gaussians
from avatar.model.skinning import NUM_SEAM_POINTS, seam_rig, skin_weights
from avatar.model.triplane import HashTriplane

CHECKPOINT_FORMAT = "avatar-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used (missing, wrong format, newer version)."""


class AvatarModel(nn.Module):
    """The person's avatar. `gaussians` holds the canonical Gaussians (any N)."""

    def __init__(self, cfg: ModelConfig, gaussians: Gaussians, audio_config: Optional[Dict[str, Any]] = None,
                 motion_space: Optional[Dict[str, Any]] = None):
        super().__init__()
        self.cfg = cfg
        self.audio_config = audio_config or {}
        self.motion_space = motion_space
        self.gaussians = gaussians
        self.triplane = HashTriplane(cfg.triplane)
        F = self.triplane.out_dim
        self.color_head = nn.Sequential(nn.Linear(F, 32), nn.ReLU(), nn.Linear(32, 3))
        nn.init.zeros_(self.color_head[2].weight)
        nn.init.zeros_(self.color_head[2].bias)
        self.audio_encoder = AudioEncoder(cfg.audio_dim, cfg.audio)
        A = cfg.audio.latent_dim
        Fd = F + 3 * (1 + 2 * cfg.deform.pe_freqs)  # deformation input: triplane feature + encoded position
        self.face_deform = DeformationNet(Fd, A, cfg.motion_dim, cfg.deform)
        self.mouth_deform = DeformationNet(Fd, A, cfg.motion_dim, cfg.deform)
        # torso Gaussians live in the head frame of a reference camera pose (the capture's camera sees a
        # torso that stays put while the head turns): see torso_transform_for()
        self.register_buffer("torso_ref", torch.eye(4))  # [4,4] head-to-camera of the reference pose
        # motion codes enter the deformation standardised by the person's training statistics:
        # (m - motion_mean) / motion_scale, so the first layer sees unit-scale input whatever the capture
        # (set_motion_normalisation; None motion = the person's mean expression)
        self.register_buffer("motion_mean", torch.zeros(max(0, cfg.motion_dim)))  # [M]
        self.register_buffer("motion_scale", torch.ones(()))  # [] RMS of the centred codes
        # landmark skinning (cfg.deform.skin): the motion codes' landmarks on this person [K,3] (head frame)
        # and metres per code unit (inter-ocular distance / MotionSpace.scale); 0 = skinning off
        K = cfg.motion_dim // 3 if (cfg.deform.skin and cfg.deform.use_motion and cfg.motion_dim % 3 == 0) else 0
        self.register_buffer("skin_points", torch.zeros(K, 3))
        self.register_buffer("skin_metres", torch.zeros(()))
        # the seams (mouth, eyelids) skinning does not blend across (avatar.model.skinning.seam_rig):
        # per landmark its seam half (+1 upper, -1 lower, 0 none) and seam id; the seam points [S,3], their
        # seam ids and the face's up axis. All zeros = plain RBF skinning (checkpoints before seams)
        S = NUM_SEAM_POINTS if K else 0
        self.register_buffer("skin_side", torch.zeros(K, dtype=torch.long))
        self.register_buffer("skin_seam_of", torch.full((K,), -1, dtype=torch.long))
        self.register_buffer("skin_seam_points", torch.zeros(S, 3))
        self.register_buffer("skin_seam_ids", torch.zeros(S, dtype=torch.long))
        self.register_buffer("skin_up", torch.zeros(3))
        # gain on the skinned displacements, calibrated after training so that the rendered mouth opens as
        # much as the person's (avatar.train.calibrate); 1 = the landmarks' own displacement
        self.register_buffer("skin_gain", torch.ones(()))
        self._cache: Optional[Dict[str, torch.Tensor]] = None

    # ---- helpers --------------------------------------------------------------------------------------
    @property
    def window(self) -> int:
        """Half-width k of the audio window render_frame expects ([2k+1, D])."""
        return self.cfg.audio.window

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    def invalidate_cache(self) -> None:
        """Drop cached canonical features (call after changing the Gaussians or the triplane)."""
        self._cache = None

    def torso_transform_for(self, viewmat: torch.Tensor) -> Optional[torch.Tensor]:
        """[4,4] map from torso (reference head) coordinates to this frame's head coordinates, assuming
        the camera of `viewmat` [4,4] is the capture camera (torso fixed relative to it); None when no
        reference pose was set (torso_ref is the identity: torso rigid with the head)."""
        if torch.equal(self.torso_ref, torch.eye(4, device=self.torso_ref.device)):
            return None
        return torch.linalg.inv(viewmat.float()) @ self.torso_ref

    def set_motion_normalisation(self, codes: torch.Tensor) -> None:
        """Standardise motion input by the training codes [F, M]: mean per dimension, one overall scale
        (the RMS of the centred codes: per-dimension z-scores would blow up near-constant dimensions)."""
        codes = torch.as_tensor(codes, dtype=torch.float32)
        mean = codes.mean(0)
        scale = ((codes - mean) ** 2).mean().sqrt().clamp_min(1e-6)
        with torch.no_grad():
            self.motion_mean.copy_(mean.to(self.motion_mean.device))
            self.motion_scale.copy_(scale.to(self.motion_scale.device))

    def set_skinning(self, landmarks: torch.Tensor, metres_per_code: float) -> None:
        """Landmark skinning from the person's neutral landmarks [478,3] (head frame) and the metric size
        of one code unit; the skinned landmarks are the motion space's `indices`."""
        rig = seam_rig(torch.as_tensor(landmarks).cpu().numpy(), (self.motion_space or {}).get("indices") or [])
        with torch.no_grad():
            for key, buf in (("points", self.skin_points), ("side", self.skin_side), ("seam_of", self.skin_seam_of),
                             ("seam_points", self.skin_seam_points), ("seam_ids", self.skin_seam_ids),
                             ("up", self.skin_up)):
                buf.copy_(rig[key].to(buf.device))
            self.skin_metres.fill_(float(metres_per_code))

    def skin_offsets(self, means: torch.Tensor, labels: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        """[N,3] offsets: each face/mouth Gaussian moves with the displacement (from the mean expression) of
        the landmarks near it on its side of the mouth and eyelid seams (avatar.model.skinning)."""
        K = self.skin_points.shape[0]
        disp = ((motion.float() - self.motion_mean) * (self.skin_metres * self.skin_gain)).view(K, 3)  # [K,3] m
        w = skin_weights(means.detach(), self.skin_points, self.cfg.deform.skin_sigma, self.skin_seam_points,
                         self.skin_seam_ids, self.skin_up, self.skin_side, self.skin_seam_of)  # [N,K]
        moving = ((labels == LABELS["face"]) | (labels == LABELS["mouth"])).unsqueeze(-1)
        return (w @ disp) * moving  # [N,3]

    def encode_audio(self, audio_windows: torch.Tensor) -> torch.Tensor:
        """Audio feature windows [B, 2k+1, D] (or [2k+1, D]) -> latents [B, A] (or [A]).

        In causal mode (cfg.audio.causal) only the first k+1+lookahead rows of each window are read, so a
        stream needs `lookahead` future frames of audio features.
        """
        return self.audio_encoder(audio_windows)

    def canonical_features(self) -> Dict[str, torch.Tensor]:
        """Per-Gaussian canonical terms: triplane feature [N,F], colours [N,3] in [0,1], deform first layers.

        Computed with autograd in training; cached (no grad) when the model is in eval mode.
        """
        if self._cache is not None and not self.training:
            return self._cache
        g = self.gaussians
        feats = self.triplane(g.means.detach() if not self.training else g.means)  # [N,F]
        logits = g.params["colors"]
        if self.cfg.gaussians.color_from_triplane:
            logits = logits + self.color_head(feats)
        labels = g.labels
        u = self.triplane.normalize(g.means.detach()) * 2 - 1  # [N,3] in [-1,1]
        enc = [u] + [f(u * (2.0 ** k) * torch.pi) for k in range(self.cfg.deform.pe_freqs) for f in (torch.sin, torch.cos)]
        dfeats = torch.cat([feats] + enc, dim=-1)  # [N, F + 3(1+2L)]
        out = {"feats": dfeats, "color_logits": logits,
               "face_part": self.face_deform.gaussian_part(dfeats, labels),
               "mouth_part": self.mouth_deform.gaussian_part(dfeats, labels)}
        if not self.training:
            out = {k: (tuple(t.detach() for t in v) if isinstance(v, tuple) else v.detach()) for k, v in out.items()}
            self._cache = out
        return out

    def deformed(self, audio_latent: Optional[torch.Tensor] = None, motion: Optional[torch.Tensor] = None,
                 blink: Optional[torch.Tensor] = None, use_deform: bool = True) -> Dict[str, torch.Tensor]:
        """Posed Gaussians for one frame: means [N,3], quats [N,4], scales [N,3], opacities [N], colors [N,3],
        plus d_means [N,3] (zeros when use_deform is False) for regularisers. audio_latent [A] or None."""
        g = self.gaussians
        p = g.params
        can = self.canonical_features()
        means, quats, logs, opa = p["means"], p["quats"], p["log_scales"], p["opacities"]
        colors = can["color_logits"]
        d_means = torch.zeros_like(means)
        if use_deform:
            if audio_latent is None:
                audio_latent = torch.zeros(self.cfg.audio.latent_dim, device=means.device)
            mouth = g.labels == LABELS["mouth"]  # [N]
            feats = can["feats"]
            if motion is not None and self.skin_points.shape[0]:  # skin_metres 0 = no offsets (no sync here)
                means = means + self.skin_offsets(means, g.labels, motion)
            if motion is not None and self.motion_mean.numel() == motion.shape[-1]:
                motion = (motion.float() - self.motion_mean) / self.motion_scale  # [M] standardised
            d_f = self.face_deform(feats, g.labels, audio_latent, motion, blink, cached=can["face_part"])
            d_m = self.mouth_deform(feats, g.labels, audio_latent, motion, blink, cached=can["mouth_part"])
            sel = mouth.unsqueeze(-1)
            d = {k: torch.where(sel if d_f[k].ndim == 2 else mouth, d_m[k], d_f[k]) for k in d_f}
            d_means = d["d_means"]
            means = means + d_means
            quats = quats + d["d_quats"]
            logs = logs + d["d_log_scales"]
            opa = opa + d["d_opacities"]
            if "d_colors" in d:
                colors = colors + d["d_colors"]
        return {"means": means, "quats": quats, "scales": torch.exp(logs), "opacities": torch.sigmoid(opa),
                "colors": torch.sigmoid(colors), "d_means": d_means}

    def render(self, viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int,
               audio_latent: Optional[torch.Tensor] = None, motion: Optional[torch.Tensor] = None,
               blink: Optional[torch.Tensor] = None, background: Optional[torch.Tensor] = None,
               use_deform: bool = True, backend: str = "auto",
               torso_transform: Optional[torch.Tensor] = None) -> Dict[str, Any]:
        """Differentiable render (training). viewmats [C,4,4], Ks [C,3,3], background [H,W,3] | [3] | None.
        torso_transform [4,4] (torso -> head coordinates, see torso_transform_for) or None (torso rigid
        with the head).

        Returns dict: rgb [C,H,W,3], alpha [C,H,W,1], mouth_alpha [C,H,W,1] (visible inside-mouth coverage),
        posed (from deformed()), views [(means2d [C,n,2], radii [C,n], idx [n])] for the strategy.
        """
        from avatar.ops import rasterize

        posed = self.deformed(audio_latent, motion, blink, use_deform)
        labels = self.gaussians.labels
        if torso_transform is not None:
            posed = _move_region(posed, labels == LABELS["torso"], torso_transform)
        mouth = labels == LABELS["mouth"]
        C = viewmats.shape[0]
        layers, views = [], []
        for sel in (mouth, ~mouth):
            idx = sel.nonzero().squeeze(1)
            if idx.numel() == 0:
                layers.append(None)
                continue
            rgb, alpha, meta = rasterize(posed["means"][idx], posed["quats"][idx], posed["scales"][idx],
                                         posed["opacities"][idx], posed["colors"][idx], viewmats, Ks,
                                         width, height, backend=backend)
            layers.append((rgb, alpha))
            views.append((meta["means2d"], meta["radii"], idx))
        zeros = viewmats.new_zeros(C, height, width, 3), viewmats.new_zeros(C, height, width, 1)
        rgb_m, a_m = layers[0] or zeros
        rgb_f, a_f = layers[1] or zeros
        if background is None:
            bg = viewmats.new_zeros(1, 1, 1, 3)
        elif background.ndim == 1:
            bg = background.view(1, 1, 1, 3)
        else:
            bg = background.reshape(-1, height, width, 3)
        rgb = rgb_f + (1 - a_f) * (rgb_m + (1 - a_m) * bg)
        alpha = a_f + (1 - a_f) * a_m
        return {"rgb": rgb, "alpha": alpha, "mouth_alpha": (1 - a_f) * a_m, "posed": posed, "views": views}

    @torch.no_grad()
    def render_frame(self, viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int,
                     audio_window: Optional[torch.Tensor] = None, motion: Optional[torch.Tensor] = None,
                     blink: float = 0.0, background: Optional[torch.Tensor] = None, *,
                     audio_latent: Optional[torch.Tensor] = None, backend: str = "auto",
                     return_mouth: bool = False, torso: str = "camera"):
        """Render one frame of the driven avatar (no grad; canonical features cached in eval mode).

        viewmats [C,4,4] world(head)-to-camera OpenCV; Ks [C,3,3] pixels; width/height in pixels.
        audio_window [2k+1, D] features of frames t-k..t+k (feature_windows(...)[t]) or audio_latent [A]
        from encode_audio (one of them; neither = silence-free neutral latent of zeros).
        motion [M] or None (None = zeros / not used); blink in [0,1] (1 = closed);
        background [H,W,3] | [3] in [0,1] or None (black).
        torso: "camera" = the torso stays where the capture camera saw it while the head moves (right
        for the capture camera or a camera near it; uses viewmats[0]); "head" = torso rigid with the head.
        Returns colors [C,H,W,3] in [0,1] and alphas [C,H,W,1] (and the visible inside-mouth coverage
        [C,H,W,1] when return_mouth).
        """
        dev = self.gaussians.means.device
        if audio_latent is None and audio_window is not None:
            audio_latent = self.encode_audio(torch.as_tensor(audio_window, device=dev))
        if motion is not None:
            motion = torch.as_tensor(motion, device=dev, dtype=torch.float32)
        b = torch.tensor(float(blink), device=dev)
        if background is not None:
            background = torch.as_tensor(background, device=dev, dtype=torch.float32)
        if torso not in ("camera", "head"):
            raise ValueError(f"render_frame: torso must be 'camera' or 'head', got {torso!r}")
        viewmats = torch.as_tensor(viewmats, device=dev, dtype=torch.float32)
        tt = self.torso_transform_for(viewmats[0]) if torso == "camera" else None
        out = self.render(viewmats, torch.as_tensor(Ks, device=dev, dtype=torch.float32), width, height,
                          audio_latent, motion, b, background, use_deform=True, backend=backend,
                          torso_transform=tt)
        rgb = out["rgb"].clamp(0, 1)
        if return_mouth:
            return rgb, out["alpha"], out["mouth_alpha"]
        return rgb, out["alpha"]

    # ---- checkpoints ----------------------------------------------------------------------------------
    def checkpoint_dict(self, meta: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Plain dict (tensors + python values) loadable with torch.load(weights_only=True)."""
        modules = {k: v.detach().clone() for k, v in self.state_dict().items() if not k.startswith("gaussians.")}
        return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                "model_config": to_dict(self.cfg), "audio_config": dict(self.audio_config),
                "motion_space": self.motion_space,
                "gaussians": {k: v.detach().clone() for k, v in self.gaussians.per_gaussian_state().items()},
                "modules": modules, "meta": dict(meta or {})}

    def save(self, path: Union[str, Path], meta: Optional[Dict[str, Any]] = None, extra: Optional[Dict] = None) -> Path:
        """Write the checkpoint atomically (avatar.io.atomic, fsynced)."""
        d = self.checkpoint_dict(meta)
        if extra:
            d.update(extra)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, fsync=True) as tmp:
            torch.save(d, tmp)
        return path

    @classmethod
    def from_checkpoint_dict(cls, d: Dict[str, Any], where: str = "checkpoint") -> "AvatarModel":
        if not isinstance(d, dict) or d.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{where}: not an avatar checkpoint (missing format={CHECKPOINT_FORMAT!r})")
        if int(d.get("version", -1)) > CHECKPOINT_VERSION or int(d.get("version", -1)) < 1:
            raise CheckpointError(f"{where}: checkpoint version {d.get('version')} is not supported "
                                  f"(this code reads version <= {CHECKPOINT_VERSION})")
        from avatar.model.checkpoint_checks import check_dict

        check_dict(d, where, CheckpointError)  # keys, shapes vs the config, size: before allocating
        cfg = from_dict(ModelConfig, d["model_config"], "model_config.")
        gs = d["gaussians"]
        g = Gaussians(gs["params.means"], gs["extras.labels"])
        g.load_per_gaussian_state(gs)
        model = cls(cfg, g, d.get("audio_config") or {}, d.get("motion_space"))
        missing, unexpected = model.load_state_dict(d["modules"], strict=False)
        # checkpoints written before motion normalisation / skinning existed keep them off (identity)
        from avatar.model.checkpoint_checks import OPTIONAL

        missing = [k for k in missing if not k.startswith("gaussians.") and k not in OPTIONAL]
        if missing or unexpected:
            raise CheckpointError(f"{where}: weights do not match the model config "
                                  f"(missing {missing[:5]}, unexpected {list(unexpected)[:5]})")
        return model

    @staticmethod
    def read_checkpoint(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> dict:
        """The raw checkpoint dict (torch.load weights_only=True); CheckpointError names the file."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"avatar checkpoint not found: {path}")
        from avatar.model.checkpoint_checks import check_file, load_error

        check_file(path, CheckpointError)
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:
            raise load_error(path, e, CheckpointError) from None

    @classmethod
    def load(cls, path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> "AvatarModel":
        """Load an avatar (or training) checkpoint; returns the model in eval mode."""
        d = cls.read_checkpoint(path, map_location)
        return cls.from_checkpoint_dict(d, str(path)).to(map_location).eval()


def _move_region(posed: Dict[str, torch.Tensor], sel: torch.Tensor, T: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Apply the rigid transform T [4,4] to the Gaussians in sel [N] (means and rotations)."""
    if not bool(sel.any()):
        return posed
    R, t = T[:3, :3].to(posed["means"]), T[:3, 3].to(posed["means"])
    q = rotmat_to_quat(R).to(posed["quats"])
    s = sel.unsqueeze(-1)
    out = dict(posed)
    out["means"] = torch.where(s, posed["means"] @ R.T + t, posed["means"])
    out["quats"] = torch.where(s, quat_mul(q.expand_as(posed["quats"]), posed["quats"]), posed["quats"])
    return out
