"""Silence gate: where nobody speaks, a mouth predicted open goes to the person's resting expression.

A prior trained by MSE on talking clips (few pauses) predicts about the average expression in
silence: on unheard speech with long pauses (FLEURS) the mouth sat half open in the pauses and
closed-ish during speech (speech/silence ratio 0.3-0.5 of the person's own). The gate blends the
predicted code deviation towards a resting deviation where the voice-activity probability (the
prior's own Silero input, prosody column VAD_COLUMN) is low:

    gate[t] = box-smoothed max(vad[t - lag .. t + lead])            in [0, 1]
    w[t]    = (1 - gate[t]) * sigmoid((open(dev[t]) - open(rest)) / softness)
    dev'[t] = (1 - w[t]) * dev[t] + w[t] * rest                    dev, rest in deviation units

The gate only closes: in a pause a mouth predicted more open than at rest goes to rest, one
predicted more closed stays (replacing it too lowered the held-out mouth correlation of the
shipped prior from 0.307 to 0.290, mostly on GRID clips whose silences it already predicts closed).

`rest` [M] is the mean clip-centred deviation over the pauses (frames the gate fully replaces) of the
prior's training clips (`rest_deviation`, pooled over ~30 identities), so resting lips stay as parted as
real people's (their speech/silence ratio is only 1.1-1.3). Fine-tuning keeps the pooled rest: one
person's own pauses are mostly breaths with the mouth open (dfrf_cnn2's would sit above its speech mean
and made the FLEURS pauses more open than the speech). The look-ahead
(`lead_frames`) stays within the prior's own audio look-ahead, so streaming sees the same numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import torch

VAD_COLUMN = 3           # avatar.prior.data.normalise_clip_features: prosody [f0, voicing, energy, vad]
FULLY_SILENT = 0.05      # gate weight below which a frame counts as a pause for the rest deviation


@dataclass(frozen=True)
class SilenceGateConfig:
    """How the silence gate turns voice activity into a per-frame weight of the predicted motion."""

    enabled: bool = True
    """Apply the gate (needs a prior with the VAD input and a fitted rest deviation)."""
    lead_frames: int = 2
    """The mouth starts moving this many frames before the voice does (<= the prior's look-ahead)."""
    lag_frames: int = 3
    """The prediction keeps driving the mouth this many frames after the voice stops."""
    smooth_frames: int = 3
    """Width of the box filter that softens the gate's edges (1 = none)."""
    min_rest_frames: int = 25
    """Fewest silent frames a rest deviation is estimated from; with fewer the gate stays off."""
    softness: float = 0.005
    """Width, in mouth-opening units (inner-lip gap / inter-ocular), of the sigmoid that decides whether
    a frame is more open than at rest (0 = a hard step)."""

    def __post_init__(self):
        if self.lead_frames < 0 or self.lag_frames < 0 or self.smooth_frames < 1 or self.min_rest_frames < 1 \
                or self.softness < 0:
            raise ValueError(f"SilenceGateConfig: lead/lag_frames must be >= 0, smooth_frames and "
                             f"min_rest_frames >= 1, softness >= 0, got {self}")


def gate_weights(vad: torch.Tensor, cfg: SilenceGateConfig) -> torch.Tensor:
    """vad [T] probabilities in [0, 1] -> gate [T] in [0, 1] (dilated by lag/lead, then box-smoothed)."""
    if vad.ndim != 1:
        raise ValueError(f"gate_weights: vad must be [T], got {tuple(vad.shape)}")
    v = vad.float().clamp(0.0, 1.0)
    t = v.shape[0]
    # frame t is driven when any frame in [t - lag, t + lead] is voiced
    padded = torch.nn.functional.pad(v[None, None], (cfg.lag_frames, cfg.lead_frames), mode="replicate")
    g = torch.nn.functional.max_pool1d(padded, cfg.lag_frames + cfg.lead_frames + 1, stride=1)[0, 0]
    if cfg.smooth_frames > 1:
        k = cfg.smooth_frames
        g = torch.nn.functional.pad(g[None, None], ((k - 1) // 2, k // 2), mode="replicate")
        g = torch.nn.functional.avg_pool1d(g, k, stride=1)[0, 0]
    return g[:t]


def apply_gate(deviation: torch.Tensor, gate: torch.Tensor, rest: torch.Tensor, open_w: torch.Tensor,
               softness: float) -> torch.Tensor:
    """deviation [T, M], gate [T], rest [M], open_w [M] (deviation -> mouth opening) -> gated deviation [T, M].

    Frame t moves towards rest by (1 - gate[t]) * sigmoid((opening(dev[t]) - opening(rest)) / softness):
    a pause closes a mouth predicted more open than at rest and leaves one predicted more closed
    (softness <= 0: a hard step)."""
    rest = rest.to(deviation)
    above = (deviation - rest[None]) @ open_w.to(deviation)                       # [T]
    side = torch.sigmoid(above / softness) if softness > 0 else (above > 0).to(deviation)
    w = ((1.0 - gate.to(deviation)) * side)[:, None]                               # [T, 1]
    return (1.0 - w) * deviation + w * rest[None]


def rest_deviation(deviations: Sequence[torch.Tensor], vads: Sequence[torch.Tensor], cfg: SilenceGateConfig
                   ) -> Tuple[torch.Tensor, int]:
    """Mean deviation [M] over the frames the gate fully replaces (gate_weights(vad) < FULLY_SILENT:
    real pauses, not the edges of words) of clip-centred deviations [F_i, M] with their VAD [F_i],
    and how many frames it is the mean of (0: zeros)."""
    rows = [d[gate_weights(v, cfg) < FULLY_SILENT] for d, v in zip(deviations, vads)]
    n = int(sum(r.shape[0] for r in rows))
    m = deviations[0].shape[1]
    if n == 0:
        return torch.zeros(m), 0
    return torch.cat(rows).double().mean(0).float(), n
