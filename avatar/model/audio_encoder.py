"""AudioEncoder: a window of per-frame audio features -> one audio latent per frame.

Input windows come from `avatar.audio.features.feature_windows(feats, k)`: [B, 2k+1, D], row k being the
current frame. Layers: linear projection + learned position embedding, `layers` pre-norm self-attention
blocks, then attention pooling with a learned query. In causal mode every attention only sees window
positions <= k + lookahead, so a streaming caller needs just `lookahead` frames of future audio; the later
rows of the window are ignored (their values cannot change the output — a test checks it).
"""
from __future__ import annotations

import torch
from torch import nn

from avatar.model.config import AudioEncoderConfig


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:  # x [B, W, dim]
        h = self.norm1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class AudioEncoder(nn.Module):
    """[B, 2k+1, D] audio feature windows -> [B, latent_dim]."""

    def __init__(self, in_dim: int, cfg: AudioEncoderConfig):
        super().__init__()
        self.cfg = cfg
        W = 2 * cfg.window + 1
        self.in_dim = in_dim
        self.proj = nn.Linear(in_dim, cfg.dim)
        self.pos = nn.Parameter(torch.randn(W, cfg.dim) * 0.02)
        self.blocks = nn.ModuleList([_Block(cfg.dim, cfg.heads) for _ in range(cfg.layers)])
        self.query = nn.Parameter(torch.randn(1, 1, cfg.dim) * 0.02)
        self.pool = nn.MultiheadAttention(cfg.dim, cfg.heads, batch_first=True)
        self.norm = nn.LayerNorm(cfg.dim)
        self.out = nn.Linear(cfg.dim, cfg.latent_dim)
        # direct path from the current frame's features: the latent follows the audio from step 0, while
        # the attention learns what the neighbouring frames add (otherwise the latent starts nearly
        # constant and a short training learns an audio-independent mean deformation)
        self.skip = nn.Linear(in_dim, cfg.latent_dim)

    @property
    def window_size(self) -> int:
        return 2 * self.cfg.window + 1

    def visible(self) -> int:
        """Number of leading window positions the encoder reads (all, or k+1+lookahead when causal)."""
        if not self.cfg.causal:
            return self.window_size
        return min(self.window_size, self.cfg.window + 1 + max(0, self.cfg.lookahead))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:  # [B, 2k+1, D] or [2k+1, D] -> [B, A] / [A]
        single = windows.ndim == 2
        if single:
            windows = windows.unsqueeze(0)
        if windows.shape[1:] != (self.window_size, self.in_dim):
            raise ValueError(f"audio window must be [B, {self.window_size}, {self.in_dim}], "
                             f"got {tuple(windows.shape)}")
        V = self.visible()
        # causal: drop the rows beyond the look-ahead entirely, then mask attention to the past + lookahead
        x = self.proj(windows[:, :V].float()) + self.pos[:V]  # [B, V, dim]
        mask = None
        if self.cfg.causal:
            i = torch.arange(V, device=x.device)
            mask = i[None, :] > (i[:, None] + max(0, self.cfg.lookahead))  # True = not allowed
        for blk in self.blocks:
            x = blk(x, mask)
        q = self.query.expand(x.shape[0], -1, -1)
        pooled = self.pool(q, x, x, need_weights=False)[0][:, 0]  # [B, dim]
        z = self.out(self.norm(pooled)) + self.skip(windows[:, self.cfg.window].float())
        return z[0] if single else z
