"""Training configuration: every loss weight, learning rate, schedule and phase boundary is a field here.

Presets live in configs/<name>.yaml as nested mappings over TrainConfig; they are read with
yaml.safe_load and applied strictly (an unknown key is an error naming the key). The resolved config of
every run is written next to its checkpoints as config.yaml and reloads through the same path.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Union

from avatar.audio.features import AudioFeatureConfig
from avatar.io.atomic import atomic_write_text
from avatar.model.config import ConfigError, ModelConfig, from_dict, to_dict
from avatar.model.strategy import StrategyConfig

CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"


@dataclass
class PhaseConfig:
    """One training phase: a step range and what is trained in it (stages are configuration, not code)."""

    name: str = "static"
    """Name shown in logs ("static", "deform", "joint", ...)."""
    until: int = 1000
    """The phase runs up to (excluding) this global step; phases are ordered by `until`."""
    deform: bool = False
    """Apply the deformation network (False = render the canonical avatar)."""
    train_canonical: bool = True
    """Update canonical Gaussians, triplane and colour head."""
    train_deform: bool = False
    """Update the audio encoder and deformation nets."""
    lr_scale: float = 1.0
    """Multiplier on every learning rate in this phase."""


@dataclass
class LossConfig:
    """Loss terms and their weights."""

    ssim_weight: float = 0.2
    """lambda of (1-lambda)*L1 + lambda*D-SSIM (3DGS uses 0.2)."""
    mouth_weight: float = 4.0
    """Extra per-pixel weight on the mouth interior (mask label 3)."""
    lip_weight: float = 2.0
    """Extra per-pixel weight on the lip region (polygon of the outer-lip landmarks, dilated)."""
    lip_dilate_px: float = 0.06
    """Lip-region dilation as a fraction of the mouth width."""
    alpha_weight: float = 0.05
    """Weight of the L1 between rendered alpha and the person mask (mask label > 0)."""
    deform_weight: float = 0.01
    """Weight of mean |Δmean| in units of max_offset (keeps deformations small and local)."""
    opacity_weight: float = 0.0
    """Weight of mean opacity (sparsity)."""
    scale_weight: float = 0.0
    """Weight of mean Gaussian scale in units of the init scale (discourages huge splats)."""
    lpips_weight: float = 0.0
    """LPIPS weight; only used when an LPIPS package with local weights is importable (never here)."""


@dataclass
class OptimConfig:
    """Adam learning rates (per parameter group)."""

    lr_means: float = 1.6e-4
    """Initial means lr in units of scene_extent (3DGS: 1.6e-4 * extent)."""
    lr_means_final: float = 1.6e-6
    """Final means lr (exponential decay over all steps), units of scene_extent."""
    lr_quats: float = 1e-3
    """Quaternion lr."""
    lr_scales: float = 5e-3
    """Log-scale lr."""
    lr_opacities: float = 5e-2
    """Opacity-logit lr."""
    lr_colors: float = 2.5e-2
    """Per-Gaussian colour-logit lr."""
    lr_triplane: float = 1e-2
    """Hash-table lr (trained with the canonical avatar and the deformation)."""
    lr_color_head: float = 1e-3
    """Triplane colour MLP lr."""
    lr_audio: float = 3e-3
    """Audio encoder lr."""
    lr_deform: float = 5e-3
    """Deformation nets lr (face and inside-mouth branches)."""


@dataclass
class DataConfig:
    """How frames are read for training."""

    max_size: int = 128
    """Images are downscaled (area) so the longer side is at most this (0 = stored size)."""
    crop: float = 0.0
    """Face-centred training crop: a square window, fixed over the clip, of side `crop` x the face size
    (median landmark extent) centred on the median face centre and kept inside the image, cut before the
    downscale (0 = the whole stored image). 1.5 at max_size 224 makes a typical mouth ~40 px wide, where
    lip motion of a few millimetres spans pixels; drive/serve/export render this view by default."""
    background: Literal["dataset", "white", "black"] = "dataset"
    """Background composited behind the avatar: the capture's background plate or a constant."""
    max_frames: int = 0
    """Use at most this many training frames, evenly spaced (0 = all)."""


@dataclass
class TrainConfig:
    """Everything `avatar train` needs besides the data folder."""

    model: ModelConfig = field(default_factory=ModelConfig)
    audio_features: AudioFeatureConfig = field(default_factory=AudioFeatureConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    phases: List[PhaseConfig] = field(default_factory=lambda: [
        PhaseConfig("static", 600, deform=False, train_canonical=True, train_deform=False),
        PhaseConfig("deform", 1400, deform=True, train_canonical=False, train_deform=True),
        PhaseConfig("joint", 2000, deform=True, train_canonical=True, train_deform=True, lr_scale=0.5),
    ])
    static: bool = False
    """Baseline: never deform (all phases render the canonical avatar), same steps otherwise."""
    seed: int = 0
    """Seed of every random choice (init, frame order, densification)."""
    backend: str = "auto"
    """Rasterizer backend (avatar.ops.rasterize: auto | cuda | gsplat | cpu | torch)."""
    device: str = "auto"
    """torch device: "auto" (CUDA when present, else CPU; printed at start), "cpu", "cuda" or "cuda:N"."""
    checkpoint_every: int = 200
    """Steps between training checkpoints (a kill loses at most this many steps)."""
    keep_checkpoints: int = 2
    """Training checkpoints kept on disk (older ones are deleted)."""
    preview_every: int = 500
    """Steps between preview PNGs (0 = only at the end)."""
    log_every: int = 20
    """Steps between scalar logs."""
    logger: Literal["tensorboard", "wandb", "none"] = "tensorboard"
    """Logging backend (wandb is optional and offline unless logged in)."""
    skin_calibration_frames: int = 80
    """After training, calibrate the landmark-skinning gain (model.skin_gain) on this many training frames
    so that the rendered mouth's opening amplitude, as the landmark detector sees it, matches the person's
    (the rendered lip edge lags the landmarks: Gaussian footprints bleed into a small gap). Needs the
    detector (`avatar train` passes mediapipe) and skinning; 0 = off (gain 1)."""
    eval_max_frames: int = 0
    """Held-out frames evaluated at the end (0 = all)."""
    threads: int = 0
    """torch CPU threads (0 = torch's default)."""
    prior: Optional[str] = None
    """Motion-prior checkpoint (`avatar prior train`), or "shipped" for the prior inside the package: motion
    codes in the prior's motion space become the deformation network's motion input (model.deform.use_motion
    is switched on, model.motion_dim = the prior's M); the capture's motion space must be the prior's.
    Recorded in avatar.pt for `avatar drive`. With "shipped", a capture without audio trains without a prior
    (logged), since there is nothing to personalise it on."""
    prior_finetune: bool = False
    """With `prior`: also fine-tune the prior on this capture's training frames (OUT/prior_finetuned.pt,
    recorded in avatar.pt and used by `avatar drive`/`serve`/`export` instead of the generic prior). On
    held-out real people this is the largest lip-sync gain from audio (see the prior's MODEL_CARD.md)."""
    prior_finetune_steps: int = 300
    """Fine-tuning steps of prior_finetune."""
    prior_motion: Literal["tracked", "predicted"] = "tracked"
    """With `prior`: the motion input during training: the capture's tracked codes (motion -> appearance
    from the truth) or the prior's predictions from the capture's audio (what drive will feed)."""

    @property
    def total_steps(self) -> int:
        return max(p.until for p in self.phases) if self.phases else 0

    def phase_at(self, step: int) -> PhaseConfig:
        """The phase that contains global step `step` (0-based)."""
        for p in sorted(self.phases, key=lambda p: p.until):
            if step < p.until:
                return p
        return sorted(self.phases, key=lambda p: p.until)[-1]

    def validate(self) -> "TrainConfig":
        if not self.phases:
            raise ConfigError("phases: at least one training phase is needed")
        ends = [p.until for p in self.phases]
        if ends != sorted(ends) or len(set(ends)) != len(ends) or ends[0] <= 0:
            raise ConfigError(f"phases: 'until' must be positive and strictly increasing, got {ends}")
        if self.checkpoint_every <= 0:
            raise ConfigError(f"checkpoint_every must be > 0, got {self.checkpoint_every}")
        if self.prior_finetune and not self.prior:
            raise ConfigError("prior_finetune: needs prior (a motion-prior checkpoint to fine-tune)")
        if self.prior_finetune_steps <= 0:
            raise ConfigError(f"prior_finetune_steps must be > 0, got {self.prior_finetune_steps}")
        return self


# ---- presets and overrides ---------------------------------------------------------------------------
def _deep_merge(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def expand_dotted(over: Dict[str, Any]) -> Dict[str, Any]:
    """{"loss.ssim_weight": 0.1} -> {"loss": {"ssim_weight": 0.1}} (nested dicts pass through)."""
    out: Dict[str, Any] = {}
    for k, v in over.items():
        parts = str(k).split(".")
        d = out
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        if isinstance(v, dict):
            v = expand_dotted(v)
        d[parts[-1]] = _deep_merge(d[parts[-1]], v) if isinstance(v, dict) and isinstance(d.get(parts[-1]), dict) else v
    return out


def read_yaml(path: Union[str, Path]) -> Dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with open(path, "r", encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def preset_path(name: str) -> Path:
    p = Path(name)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    path = CONFIGS_DIR / f"{name}.yaml"
    if not path.is_file():
        avail = sorted(x.stem for x in CONFIGS_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown preset {name!r}: no {path} (available: {', '.join(avail)})")
    return path


def config_from_dict(data: Dict[str, Any], where: str = "") -> TrainConfig:
    """Strict: unknown keys raise ConfigError naming the dotted key."""
    try:
        return from_dict(TrainConfig, data).validate()
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}" if where else str(e)) from None


def load_config(preset: Optional[str] = "tiny", overrides: Optional[Dict[str, Any]] = None) -> TrainConfig:
    """Defaults <- preset YAML (name in configs/ or a path) <- overrides (nested or dotted keys)."""
    data: Dict[str, Any] = {}
    where = "overrides"
    if preset:
        path = preset_path(preset)
        data = read_yaml(path)
        where = str(path)
        config_from_dict(data, where)  # report preset errors against the preset file
    if overrides:
        data = _deep_merge(data, expand_dotted(overrides))
    return config_from_dict(data, where if not overrides else f"{where} + overrides")


def save_config(cfg: TrainConfig, path: Union[str, Path]) -> Path:
    """Write the resolved config as YAML, atomically."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    atomic_write_text(path, text)
    return path
