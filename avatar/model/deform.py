"""DeformationNet: per-Gaussian offsets from [triplane feature, region-gated audio latent, motion, blink].

First layer, split so the per-Gaussian part is computed once per frame and the per-frame part once:
    h0_i = W_f f_i + g_i * (W_a a) + W_m m + w_b b + b0,   g_i = sigmoid(gate[region_i] + v . f_i)
(f_i the canonical triplane feature [F], a the audio latent [A], m the motion code [M], b the blink).
Then `layers` hidden ReLU layers and zero-initialised output heads, so an untrained net outputs exactly
zero offsets and renders the canonical avatar. The region gate lets the torso/hair ignore the audio.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from avatar.model.config import DeformConfig


class DeformationNet(nn.Module):
    """Offsets for N Gaussians: Δmean [N,3], Δquat [N,4], Δlog_scale [N,3], Δopacity logit [N] (+ Δcolor)."""

    OUT = {"d_means": 3, "d_quats": 4, "d_log_scales": 3, "d_opacities": 1}

    def __init__(self, feat_dim: int, audio_dim: int, motion_dim: int, cfg: DeformConfig, n_regions: int = 5):
        super().__init__()
        self.cfg = cfg
        H = cfg.hidden
        self.motion_dim = motion_dim if cfg.use_motion else 0
        self.w_feat = nn.Linear(feat_dim, H)
        self.w_audio = nn.Linear(audio_dim, H, bias=False)
        self.w_motion = nn.Linear(self.motion_dim, H, bias=False) if self.motion_dim else None
        self.w_blink = nn.Parameter(torch.zeros(H)) if cfg.use_blink else None
        if cfg.use_blink:
            nn.init.normal_(self.w_blink, std=1.0)
        self.gate_region = nn.Parameter(torch.zeros(n_regions))  # per region label (mask label values)
        self.gate_feat = nn.Linear(feat_dim, 1)
        nn.init.zeros_(self.gate_feat.weight)
        nn.init.zeros_(self.gate_feat.bias)
        hidden = []
        for _ in range(max(0, cfg.layers - 1)):
            hidden += [nn.ReLU(), nn.Linear(H, H)]
        self.trunk = nn.Sequential(*hidden, nn.ReLU())
        outs = dict(self.OUT)
        if cfg.deform_color:
            outs["d_colors"] = 3
        self.out_dims = outs
        self.head = nn.Linear(H, sum(outs.values()))
        nn.init.zeros_(self.head.weight)  # zero-initialised heads: untrained => canonical avatar
        nn.init.zeros_(self.head.bias)

    def gaussian_part(self, feats: torch.Tensor, labels: torch.Tensor):
        """Per-Gaussian terms (cacheable): feats [N,F], labels [N] -> (W_f f + b0 [N,H], gate [N,1])."""
        gate = torch.sigmoid(self.gate_region[labels.clamp(0, len(self.gate_region) - 1)].unsqueeze(-1)
                             + self.gate_feat(feats))
        return self.w_feat(feats), gate

    def forward(self, feats: torch.Tensor, labels: torch.Tensor, audio: torch.Tensor,
                motion: Optional[torch.Tensor] = None, blink: Optional[torch.Tensor] = None,
                cached=None) -> Dict[str, torch.Tensor]:
        """feats [N,F], labels [N], audio latent [A], motion [M] or None (= zeros), blink [] or None (= 0)."""
        hf, gate = cached if cached is not None else self.gaussian_part(feats, labels)
        frame = torch.zeros_like(hf[0])  # [H]
        if self.w_motion is not None and motion is not None:
            frame = frame + self.w_motion(motion.float())
        if self.w_blink is not None and blink is not None:
            frame = frame + self.w_blink * blink.float()
        h = hf + gate * self.w_audio(audio.float()) + frame  # [N,H]
        raw = self.head(self.trunk(h))  # [N, sum(out)]
        out, i = {}, 0
        for name, d in self.out_dims.items():
            out[name] = raw[:, i:i + d]
            i += d
        out["d_means"] = self.cfg.max_offset * torch.tanh(out["d_means"])
        out["d_opacities"] = out["d_opacities"].squeeze(-1)
        return out
