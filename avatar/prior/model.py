"""Generic, person-agnostic motion prior: audio features (+ pitch) -> motion codes, blink, head pose.

    MotionPriorNet   a causal temporal transformer (conv front-end holding all of the bounded
                     look-ahead, then causal ALiBi attention over `past_frames`), conditioned in
                     context on style tokens pooled from a short reference clip (audio features +
                     motion codes) of the target person; separate heads for motion codes, blink and
                     head pose.
    MotionPrior      the deployable bundle: network + normalisation + the motion-space definition
                     (MotionSpace dict and the PCA over it) + the audio-feature config; versioned
                     checkpoint, loaded with weights_only=True, checked on load.
    frame_pitch      per-frame pitch features (YIN-lite in torch): log-F0, voicing, log-energy.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avatar.audio.timeline import SAMPLE_RATE
from avatar.io.atomic import atomic_path
from avatar.prior.config import MotionPriorConfig
from avatar.prior.gate import VAD_COLUMN, SilenceGateConfig, apply_gate, gate_weights
from avatar.prior.pose import PoseConfig, rotation_only, smooth_pose
from avatar.prior.pca import MotionPCA

CHECKPOINT_FORMAT = "avatar.motion_prior"
CHECKPOINT_VERSION = 2
# calibration and personalisation statistics (MotionPrior.calib), fitted by avatar.prior.trainer
CALIB_KEYS = ("motion_mean", "dev_std", "open_w", "open_b", "gain", "pose_gain", "rest_dev", "rest_frames")


class PriorCheckpointError(ValueError):
    """A prior checkpoint is missing, corrupt, of another version, or does not match the data."""


# ----------------------------------------------------------------------------------------------
# pitch (YIN-lite, de Cheveigne & Kawahara 2002: cumulative-mean-normalised difference function)
# ----------------------------------------------------------------------------------------------
def frame_pitch(wav: torch.Tensor | np.ndarray, fps: float, num_frames: int, sr: int = SAMPLE_RATE,
                fmin: float = 70.0, fmax: float = 400.0, window_s: float = 0.032,
                threshold: float = 0.25) -> torch.Tensor:
    """Per-frame pitch features aligned to video frames: wav [S] -> [F, 3] float32 with columns
    (log2(F0 / 100 Hz) where voiced else 0, voicing confidence in [0, 1], log RMS energy).
    The analysis window of frame t is centred at (t + 0.5) / fps seconds."""
    x = torch.as_tensor(np.asarray(wav) if not torch.is_tensor(wav) else wav, dtype=torch.float32).flatten()
    if fps <= 0 or num_frames <= 0:
        raise ValueError(f"frame_pitch: fps and num_frames must be > 0 (got {fps}, {num_frames})")
    w = int(round(window_s * sr))
    tau_min, tau_max = int(sr // fmax), int(math.ceil(sr / fmin))
    n = w + tau_max
    centres = ((torch.arange(num_frames, dtype=torch.float64) + 0.5) / fps * sr).round().long()
    starts = centres - n // 2
    pad = n + 1
    right = max(pad, int(starts.max()) + n - x.numel() + 1)
    xp = F.pad(x, (pad, right))
    idx = (starts + pad)[:, None] + torch.arange(n)[None, :]
    frames = xp[idx]                                                      # [F, n]
    frames = frames - frames.mean(1, keepdim=True)
    head = frames[:, :w]
    nfft = 1 << int(math.ceil(math.log2(2 * n)))
    r = torch.fft.irfft(torch.fft.rfft(head, nfft).conj() * torch.fft.rfft(frames, nfft), nfft)
    r = r[:, : tau_max + 1]                                               # r(tau) = sum_j x_j x_{j+tau}, j < w
    sq = F.pad(torch.cumsum(frames.double() ** 2, 1), (1, 0))            # [F, n+1]
    taus = torch.arange(tau_max + 1)
    e_tau = (sq[:, taus + w] - sq[:, taus]).float()                       # sum_{j<w} x_{j+tau}^2
    e0 = e_tau[:, :1]
    d = (e0 + e_tau - 2 * r).clamp_min(0)                                 # difference function d(tau)
    cum = torch.cumsum(d[:, 1:], 1)
    dn = torch.ones_like(d)
    dn[:, 1:] = d[:, 1:] * taus[1:] / cum.clamp_min(1e-12)                # CMNDF d'(tau)
    rng = dn[:, tau_min: tau_max + 1]
    below = rng < threshold
    any_below = below.any(1)
    first = torch.where(any_below, below.float().argmax(1), rng.argmin(1))
    # refine: the minimum within [first, 1.5 * first] (stays below the octave error)
    lag = first + tau_min
    k = torch.arange(rng.shape[1])[None, :]
    lo, hi = first[:, None], ((lag * 3) // 2 - tau_min)[:, None]
    masked = torch.where((k >= lo) & (k <= hi), rng, torch.full_like(rng, float("inf")))
    best = masked.argmin(1)
    dbest = rng.gather(1, best[:, None])[:, 0]
    tau = (best + tau_min).float()
    # parabolic interpolation of the lag
    left = dn.gather(1, (best + tau_min - 1).clamp_min(1)[:, None])[:, 0]
    right = dn.gather(1, (best + tau_min + 1).clamp_max(tau_max)[:, None])[:, 0]
    denom = left - 2 * dbest + right
    tau = tau + torch.where(denom.abs() > 1e-9, 0.5 * (left - right) / denom, torch.zeros_like(tau)).clamp(-1, 1)
    rms = (e0[:, 0] / w).clamp_min(0).sqrt()
    voicing = (1 - dbest).clamp(0, 1) * (rms > 1e-3).float()
    voiced = any_below & (rms > 1e-3)
    logf0 = torch.where(voiced, torch.log2(sr / tau / 100.0), torch.zeros_like(tau))
    return torch.stack([logf0, voicing, torch.log(rms + 1e-5)], 1).float()   # [F, 3]


# ----------------------------------------------------------------------------------------------
# network
# ----------------------------------------------------------------------------------------------
def _alibi_slopes(h: int) -> torch.Tensor:
    return torch.tensor([2.0 ** (-8.0 * (i + 1) / h) for i in range(h)])


class _Block(nn.Module):
    """Pre-LN transformer block; attention with an additive bias [H, T, S] (ALiBi + mask)."""

    def __init__(self, d: int, heads: int, ff_mult: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d, bias=False)   # a key bias cannot change the softmax: none (no dead parameters)
        self.v = nn.Linear(d, d)
        self.proj = nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, ff_mult * d), nn.GELU(), nn.Linear(ff_mult * d, d))
        self.drop = nn.Dropout(dropout)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, prefix: Optional[torch.Tensor], bias: torch.Tensor) -> torch.Tensor:
        # x [B, T, d]; prefix [B, P, d] (style tokens, keys/values only) or None; bias [H, T, P+T]
        b, t, d = x.shape
        h = self.ln1(x)
        kv_in = h if prefix is None else torch.cat([self.ln1(prefix), h], 1)
        q, k, v = self.q(h), self.k(kv_in), self.v(kv_in)
        q = q.view(b, t, self.heads, -1).transpose(1, 2)                          # [B, H, T, hd]
        k = k.view(b, kv_in.shape[1], self.heads, -1).transpose(1, 2)             # [B, H, S, hd]
        v = v.view(b, kv_in.shape[1], self.heads, -1).transpose(1, 2)
        # no dropout on the attention weights: with a float mask it forces the slow math kernel on CPU
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype)[None])
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.ff(self.ln2(x)))


class StyleEncoder(nn.Module):
    """Reference clip (audio features + motion latents) -> style tokens [B, S, d]."""

    def __init__(self, cfg: MotionPriorConfig):
        super().__init__()
        d = cfg.d_model
        self.inp = nn.Sequential(nn.Linear(cfg.audio_dim + cfg.code_dim, d), nn.GELU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList([_Block(d, cfg.num_heads, cfg.ff_mult, cfg.dropout) for _ in range(cfg.style_layers)])
        self.queries = nn.Parameter(torch.randn(cfg.style_tokens, d) * 0.02)
        self.pool = nn.MultiheadAttention(d, cfg.num_heads, batch_first=True)
        self.ln = nn.LayerNorm(d)
        self.register_buffer("slopes", _alibi_slopes(cfg.num_heads), persistent=False)

    def forward(self, ref_audio: torch.Tensor, ref_codes: torch.Tensor) -> torch.Tensor:
        # ref_audio [B, R, Da] (normalised), ref_codes [B, R, K] (whitened) -> [B, S, d]
        if ref_audio.shape[:2] != ref_codes.shape[:2]:
            raise ValueError(f"style reference: audio {tuple(ref_audio.shape)} and motion {tuple(ref_codes.shape)} "
                             "must have the same [B, R]")
        x = self.inp(torch.cat([ref_audio, ref_codes], -1))
        r = x.shape[1]
        pos = torch.arange(r, device=x.device, dtype=x.dtype)
        bias = -self.slopes.to(x)[:, None, None] * (pos[:, None] - pos[None, :]).abs()[None]    # [H, R, R]
        for blk in self.blocks:
            x = blk(x, None, bias)
        q = self.queries[None].expand(x.shape[0], -1, -1)
        tokens, _ = self.pool(q, x, x, need_weights=False)
        return self.ln(tokens)


class MotionPriorNet(nn.Module):
    """audio [B, T, Da] (+ pitch [B, T, P]) and style tokens -> whitened motion latents [B, T, K],
    blink logits [B, T], head pose [B, T, pose_dim] (normalised). Output at frame t depends on
    inputs up to t + lookahead_frames only."""

    def __init__(self, cfg: MotionPriorConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        d = cfg.d_model
        self.inp = nn.Linear(cfg.audio_dim + cfg.pitch_dim, d)
        self.conv = nn.Conv1d(d, d, cfg.conv_kernel)
        self.blocks = nn.ModuleList([_Block(d, cfg.num_heads, cfg.ff_mult, cfg.dropout) for _ in range(cfg.num_layers)])
        self.ln = nn.LayerNorm(d)
        self.motion_head = nn.Linear(d, cfg.code_dim)
        self.blink_head = nn.Sequential(nn.Linear(d, d // 2), nn.GELU(), nn.Linear(d // 2, 1))
        self.pose_head = nn.Sequential(nn.Linear(d, d // 2), nn.GELU(), nn.Linear(d // 2, cfg.pose_dim))
        if cfg.style:
            self.style_encoder = StyleEncoder(cfg)
            self.null_style = nn.Parameter(torch.randn(cfg.style_tokens, d) * 0.02)
            # FiLM of every block's output by the pooled style (zero-init: starts as identity)
            self.film = nn.ModuleList([nn.Linear(d, 2 * d) for _ in range(cfg.num_layers)])
            for f in self.film:
                nn.init.zeros_(f.weight)
                nn.init.zeros_(f.bias)
        self.register_buffer("slopes", _alibi_slopes(cfg.num_heads), persistent=False)

    def encode_style(self, ref_audio: torch.Tensor, ref_codes: torch.Tensor) -> torch.Tensor:
        if not self.cfg.style:
            raise ValueError("this motion prior was built without a style input (config.style=False)")
        return self.style_encoder(ref_audio, ref_codes)

    def _bias(self, t: int, p: int, device, dtype) -> torch.Tensor:
        i = torch.arange(t, device=device)[:, None]
        j = torch.arange(t, device=device)[None, :]
        dist = (i - j).to(dtype)
        ok = (j <= i) & (i - j <= self.cfg.past_frames)
        bias = torch.where(ok[None], -self.slopes.to(device, dtype)[:, None, None] * dist[None],
                           torch.full((1, t, t), float("-inf"), device=device, dtype=dtype))   # [H, T, T]
        if p:
            bias = torch.cat([torch.zeros(bias.shape[0], t, p, device=device, dtype=dtype), bias], 2)
        return bias

    def forward(self, audio: torch.Tensor, pitch: Optional[torch.Tensor] = None,
                style: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        cfg = self.cfg
        if audio.ndim != 3 or audio.shape[-1] != cfg.audio_dim:
            raise ValueError(f"MotionPriorNet: audio must be [B, T, {cfg.audio_dim}], got {tuple(audio.shape)}")
        if cfg.pitch_dim:
            if pitch is None or pitch.shape != (*audio.shape[:2], cfg.pitch_dim):
                raise ValueError(f"MotionPriorNet: pitch must be [B, T, {cfg.pitch_dim}], got "
                                 f"{None if pitch is None else tuple(pitch.shape)}")
            x = torch.cat([audio, pitch], -1)
        else:
            x = audio
        b, t, _ = x.shape
        x = self.inp(x).transpose(1, 2)                                             # [B, d, T]
        la = cfg.lookahead_frames
        x = self.conv(F.pad(x, (cfg.conv_kernel - 1 - la, la), mode="replicate")).transpose(1, 2)  # [B, T, d]
        x = F.gelu(x)
        prefix, film_in = None, None
        if cfg.style:
            if style is None:
                style = self.null_style[None].expand(b, -1, -1)
            elif style.ndim != 3 or style.shape[0] not in (1, b) or style.shape[2] != cfg.d_model:
                raise ValueError(f"MotionPriorNet: style tokens must be [B, S, {cfg.d_model}], got {tuple(style.shape)}")
            prefix = style.expand(b, -1, -1)
            film_in = prefix.mean(1, keepdim=True)                                   # [B, 1, d]
        bias = self._bias(t, 0 if prefix is None else prefix.shape[1], x.device, x.dtype)
        for i, blk in enumerate(self.blocks):
            x = blk(x, prefix, bias)
            if film_in is not None:
                g, s = self.film[i](film_in).chunk(2, -1)
                x = x * (1 + g) + s
        x = self.ln(x)
        return {"motion": self.motion_head(x),              # [B, T, K]
                "blink_logit": self.blink_head(x)[..., 0],  # [B, T]
                "pose": self.pose_head(x)}                  # [B, T, pose_dim]


class PriorEnsemble(nn.Module):
    """cfg.members MotionPriorNet of one config (each initialised on its own); forward -> the mean of
    their outputs (the same dict as MotionPriorNet; MotionPrior.member_forward runs one member)."""

    def __init__(self, cfg: MotionPriorConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.members = nn.ModuleList([MotionPriorNet(cfg) for _ in range(cfg.members)])

    def forward(self, audio: torch.Tensor, pitch: Optional[torch.Tensor] = None,
                style: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        outs = [m(audio, pitch, style) for m in self.members]
        return {k: torch.stack([o[k] for o in outs]).mean(0) for k in outs[0]}


# ----------------------------------------------------------------------------------------------
# the deployable bundle + checkpoint
# ----------------------------------------------------------------------------------------------
def plain(obj: Any) -> Any:
    """Recursively convert numpy arrays/scalars and tuples to plain python (for weights_only
    checkpoints and for comparing motion-space definitions)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if torch.is_tensor(obj):
        return obj.tolist()
    return obj


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(prefix + k)
            else:
                out += _diff_keys(a[k], b[k], prefix + k + ".")
        return out
    if isinstance(a, float) or isinstance(b, float):
        try:
            return [] if abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(a))) else [prefix.rstrip(".")]
        except (TypeError, ValueError):
            return [prefix.rstrip(".")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += _diff_keys(x, y, f"{prefix}{i}.")
        return out[:1]
    return [] if a == b else [prefix.rstrip(".")]


class MotionPrior(nn.Module):
    """Network + everything needed to use it on new data (normalisers, motion-space definition)."""

    def __init__(self, cfg: MotionPriorConfig, pca: MotionPCA, motion_space: Dict[str, Any],
                 audio_features: Dict[str, Any], audio_mean: torch.Tensor, audio_std: torch.Tensor,
                 pitch_mean: torch.Tensor, pitch_std: torch.Tensor, pose_mean: torch.Tensor,
                 pose_std: torch.Tensor, meta: Optional[Dict[str, Any]] = None,
                 style_ref: Optional[Dict[str, torch.Tensor]] = None,
                 calib: Optional[Dict[str, torch.Tensor]] = None):
        super().__init__()
        if pca.latent_dim != cfg.code_dim:
            raise PriorCheckpointError(f"prior: config.code_dim={cfg.code_dim} but the PCA has {pca.latent_dim} components")
        self.cfg = cfg
        self.net = MotionPriorNet(cfg) if cfg.members == 1 else PriorEnsemble(cfg)
        self.pca = pca
        self.motion_space = plain(motion_space)
        self.audio_features = plain(audio_features)
        self.meta = plain(meta or {})
        self.style_ref = style_ref
        m, k = pca.code_dim, pca.latent_dim
        # calib: motion_mean [M] pooled absolute codes (the offset when the person's is unknown), dev_std [M]
        # pooled within-clip std of the (scale-normalised) deviations, open_w [M] / open_b []: linear map
        # codes -> mouth opening, gain [K] / pose_gain [6]: amplitude calibration (validation variance matching),
        # rest_dev [M] / rest_frames []: the silence gate's resting deviation and how many silent frames
        # it was estimated from (avatar.prior.gate; 0 = none: priors fitted before it keep the gate off)
        base = {"motion_mean": torch.zeros(m), "dev_std": torch.ones(m), "open_w": torch.zeros(m),
                "open_b": torch.zeros(()), "gain": torch.ones(k), "pose_gain": torch.ones(6),
                "rest_dev": torch.zeros(m), "rest_frames": torch.zeros(())}
        for key, val in (calib or {}).items():
            if key not in base:
                raise PriorCheckpointError(f"prior: unknown calibration entry {key!r}")
            val = torch.as_tensor(val, dtype=torch.float32)
            if val.shape != base[key].shape:
                raise PriorCheckpointError(f"prior: calibration {key} has shape {tuple(val.shape)}, expected "
                                           f"{tuple(base[key].shape)}")
            base[key] = val.clone()
        self.calib = base
        for name, val in (("audio_mean", audio_mean), ("audio_std", audio_std), ("pitch_mean", pitch_mean),
                          ("pitch_std", pitch_std), ("pose_mean", pose_mean), ("pose_std", pose_std)):
            self.register_buffer(name, torch.as_tensor(val, dtype=torch.float32).clone())

    @property
    def motion_dim(self) -> int:
        return self.pca.code_dim

    # --- normalisation -------------------------------------------------------------------------
    def norm_audio(self, feats: torch.Tensor) -> torch.Tensor:
        if feats.shape[-1] != self.cfg.audio_dim:
            raise ValueError(f"prior: audio features must be [..., {self.cfg.audio_dim}] "
                             f"(audio feature config {self.audio_features}), got {tuple(feats.shape)}")
        return (feats - self.audio_mean) / self.audio_std

    def norm_pitch(self, pitch: torch.Tensor) -> torch.Tensor:
        return (pitch - self.pitch_mean) / self.pitch_std

    def encode_motion(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.shape[-1] != self.motion_dim:
            raise ValueError(f"prior: motion codes must be [..., {self.motion_dim}] (motion space "
                             f"{self.motion_space.get('name', self.motion_space.get('kind', '?'))}), got {tuple(codes.shape)}")
        return self.pca.encode(codes)

    def style_tokens(self, ref_audio: torch.Tensor, ref_motion: torch.Tensor) -> torch.Tensor:
        """ref_audio [B, R, Da] raw features, ref_motion [B, R, M] motion codes -> [B, S, d]."""
        return self.net.encode_style(self.norm_audio(ref_audio), self.encode_motion(ref_motion))

    def forward(self, feats: torch.Tensor, pitch: Optional[torch.Tensor], style: Optional[torch.Tensor] = None
                ) -> Dict[str, torch.Tensor]:
        """feats [B, T, Da] raw, pitch [B, T, 3] raw -> dict of network outputs (normalised)."""
        return self.net(*self._net_inputs(feats, pitch), style)

    def _net_inputs(self, feats: torch.Tensor, pitch: Optional[torch.Tensor]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Raw (feats, pitch) -> the normalised inputs of the network (pitch None when it takes none)."""
        return self.norm_audio(feats), None if pitch is None or not self.cfg.pitch_dim else self.norm_pitch(pitch)

    @property
    def member_nets(self) -> List[nn.Module]:
        """The networks of the ensemble (a list of one for a single network)."""
        return list(self.net.members) if isinstance(self.net, PriorEnsemble) else [self.net]

    def member_forward(self, i: int, feats: torch.Tensor, pitch: Optional[torch.Tensor],
                       style: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """As forward, for ensemble member i alone (training gives each member its own batch and loss)."""
        return self.member_nets[i](*self._net_inputs(feats, pitch), style)

    def personalise(self, deviation: torch.Tensor, mean=None, std=None) -> torch.Tensor:
        """Absolute motion codes [T, M] from predicted deviations: mean (the person's mean codes [M], or
        the prior's pooled mean when None) + deviation, each code dimension rescaled to the person's
        own spread (std [M]: deviation * std / dev_std) when std is given."""
        c = {k: v.to(deviation) for k, v in self.calib.items()}
        dev = deviation
        if std is not None:
            std = torch.as_tensor(np.asarray(std, np.float32)).to(deviation)
            if std.shape != (self.motion_dim,):
                raise ValueError(f"prior: person std must be [{self.motion_dim}], got {tuple(std.shape)}")
            dev = dev * (std / c["dev_std"].clamp_min(1e-6))
        mu = c["motion_mean"] if mean is None else torch.as_tensor(np.asarray(mean, np.float32)).to(deviation)
        if mu.shape != (self.motion_dim,):
            raise ValueError(f"prior: person mean must be [{self.motion_dim}], got {tuple(mu.shape)}")
        return mu + dev

    def opening_of(self, codes: torch.Tensor) -> torch.Tensor:
        """Mouth opening (inner-lip gap / inter-ocular) [T] read off absolute codes [T, M] (linear map fitted
        on the training clips' landmarks)."""
        return codes @ self.calib["open_w"].to(codes) + self.calib["open_b"].to(codes)

    @torch.no_grad()
    def predict(self, feats: torch.Tensor, pitch: Optional[torch.Tensor],
                style: Optional[Tuple[torch.Tensor, torch.Tensor]] = None, chunk: int = 256,
                use_stored_style: bool = True, calibrated: bool = True,
                gate: Optional[SilenceGateConfig] = None, pose_cfg: Optional[PoseConfig] = None
                ) -> Dict[str, torch.Tensor]:
        """One sequence: feats [T, Da], pitch [T, P]; style (ref_feats [R, Da], ref_motion [R, M]) or None
        (then the reference stored by `avatar prior finetune` when present and use_stored_style, else
        no style). -> deviation [T, M] (motion codes minus the person's mean, in the pool's typical
        amplitude; MotionPrior.personalise makes absolute codes), motion [T, M] = personalise(deviation)
        with the pooled mean, blink [T] in [0, 1], head_pose [T, 6] (rotation vector relative to the mean
        pose, causally smoothed (avatar.prior.pose, pose_cfg=None: PoseConfig() defaults); translation
        zero), z [T, K] (latents), gate [T] (the silence gate's weight of the prediction; ones when
        off). calibrated: apply the amplitude calibration gains and the silence gate (avatar.prior.gate;
        gate=None: SilenceGateConfig() defaults; off for priors without the VAD input or a rest deviation).
        Long inputs run in chunks with enough past context that the result equals a full pass."""
        self.eval()
        if style is None and use_stored_style and self.style_ref is not None and self.cfg.style:
            style = (self.style_ref["audio"], self.style_ref["motion"])
        dev = self.audio_mean.device
        feats = torch.as_tensor(feats, dtype=torch.float32, device=dev)
        pitch = None if pitch is None else torch.as_tensor(pitch, dtype=torch.float32, device=dev)
        tokens = None
        if style is not None:
            if not self.cfg.style:
                raise ValueError("prior: a style reference was given but this prior has no style input")
            ra = torch.as_tensor(style[0], dtype=torch.float32, device=dev)
            rm = torch.as_tensor(style[1], dtype=torch.float32, device=dev)
            if ra.ndim != 2 or rm.ndim != 2 or ra.shape[0] != rm.shape[0] or ra.shape[0] < 1:
                raise ValueError(f"prior: style must be (ref_audio_feats [R, {self.cfg.audio_dim}], ref_motion "
                                 f"[R, {self.motion_dim}]) with the same R >= 1, got {tuple(ra.shape)}, {tuple(rm.shape)}")
            tokens = self.style_tokens(ra[None], rm[None])
        t = feats.shape[0]
        ctx = self.cfg.receptive_past()
        la = self.cfg.lookahead_frames
        outs = []
        for s in range(0, t, chunk):
            e = min(t, s + chunk)
            a, b = max(0, s - ctx), min(t, e + la)
            o = self(feats[None, a:b], None if pitch is None else pitch[None, a:b], tokens)
            outs.append({k: v[0, s - a: e - a] for k, v in o.items()})
        o = {k: torch.cat([d[k] for d in outs], 0) for k in outs[0]}
        z = o["motion"] * (self.calib["gain"].to(o["motion"]) if calibrated else 1.0)
        dev = (z * self.pca.scale.to(z)) @ self.pca.components.to(z)          # [T, M] (targets are centred)
        g = torch.ones(t, device=z.device)
        gate = gate or SilenceGateConfig()
        if (calibrated and gate.enabled and pitch is not None and pitch.shape[1] > VAD_COLUMN
                and float(self.calib["rest_frames"]) >= gate.min_rest_frames):
            g = gate_weights(pitch[:, VAD_COLUMN], gate)
            dev = apply_gate(dev, g, self.calib["rest_dev"], self.calib["open_w"], gate.softness)
        pose = smooth_pose(o["pose"], pose_cfg or PoseConfig())               # [T, 6] normalised
        pose = pose * (self.calib["pose_gain"].to(z) if calibrated else 1.0)
        return {"deviation": dev, "motion": self.personalise(dev), "z": z, "gate": g,
                "blink": torch.sigmoid(o["blink_logit"]),                    # [T]
                "head_pose": rotation_only(pose * self.pose_std + self.pose_mean)}   # [T, 6]

    # --- checkpoint ------------------------------------------------------------------------------
    def checkpoint(self) -> Dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                "config": self.cfg.to_dict(), "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
                "pca": self.pca.to_dict(), "motion_space": self.motion_space, "audio_features": self.audio_features,
                "norm": {k: getattr(self, k).detach().cpu() for k in
                         ("audio_mean", "audio_std", "pitch_mean", "pitch_std", "pose_mean", "pose_std")},
                "meta": self.meta, "calib": {k: v.detach().cpu().clone() for k, v in self.calib.items()},
                "style_ref": None if self.style_ref is None else {k: v.detach().cpu() for k, v in self.style_ref.items()}}

    def save(self, path: str | Path, extra: Optional[Dict[str, Any]] = None) -> None:
        """Atomic torch.save of checkpoint() (+ extra keys, e.g. training state)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        obj = self.checkpoint()
        if extra:
            obj.update(extra)
        with atomic_path(path, fsync=True) as tmp:
            torch.save(obj, tmp)

    @classmethod
    def from_checkpoint(cls, ck: Dict[str, Any], source: str = "<checkpoint>") -> "MotionPrior":
        if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
            raise PriorCheckpointError(f"{source}: not a motion-prior checkpoint (format "
                                       f"{ck.get('format') if isinstance(ck, dict) else type(ck).__name__!r}, "
                                       f"expected {CHECKPOINT_FORMAT!r})")
        if ck.get("version") != CHECKPOINT_VERSION:
            raise PriorCheckpointError(f"{source}: motion-prior checkpoint version {ck.get('version')!r}; this code "
                                       f"reads version {CHECKPOINT_VERSION} (retrain with `avatar prior train`)")
        missing = [k for k in ("config", "state_dict", "pca", "motion_space", "audio_features", "norm") if k not in ck]
        if missing:
            raise PriorCheckpointError(f"{source}: motion-prior checkpoint lacks {missing}")
        try:
            cfg = MotionPriorConfig.from_dict(ck["config"])
            pca = MotionPCA.from_dict(ck["pca"])
            n = ck["norm"]
            m = cls(cfg, pca, ck["motion_space"], ck["audio_features"], n["audio_mean"], n["audio_std"],
                    n["pitch_mean"], n["pitch_std"], n["pose_mean"], n["pose_std"], ck.get("meta"), ck.get("style_ref"),
                    ck.get("calib"))
            m.net.load_state_dict(ck["state_dict"])
        except PriorCheckpointError:
            raise
        except (KeyError, ValueError, RuntimeError, TypeError) as e:
            raise PriorCheckpointError(f"{source}: inconsistent motion-prior checkpoint: {e}") from e
        return m

    @classmethod
    def load(cls, path: str | Path, map_location: str = "cpu") -> "MotionPrior":
        path = Path(path)
        if not path.is_file():
            raise PriorCheckpointError(f"{path}: motion-prior checkpoint not found (make one with `avatar prior train`)")
        try:
            ck = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # corrupt / truncated / foreign pickle
            raise PriorCheckpointError(f"{path}: cannot read motion-prior checkpoint: {e}") from e
        return cls.from_checkpoint(ck, str(path))

    def check_motion_space(self, motion_space: Dict[str, Any], source: str = "data") -> None:
        """Raise PriorCheckpointError when `motion_space` (a MotionSpace.to_dict()) differs from the prior's."""
        diff = _diff_keys(self.motion_space, plain(motion_space))
        if diff:
            raise PriorCheckpointError(f"{source}: motion-space definition differs from the prior's in {diff[:6]} "
                                       "(the prior was trained on codes of another MotionSpace; retrain or re-capture)")

    def check_audio_features(self, audio_features: Dict[str, Any], source: str = "data") -> None:
        diff = _diff_keys(self.audio_features, plain(audio_features))
        if diff:
            raise PriorCheckpointError(f"{source}: audio-feature config differs from the prior's in {diff[:6]}")
