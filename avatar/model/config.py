"""Configuration dataclasses of the avatar model (saved inside every checkpoint)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Tuple


@dataclass
class TriplaneConfig:
    """Hash-triplane feature field over the head box."""

    n_levels: int = 8
    """Resolution levels per plane."""
    n_features_per_level: int = 2
    """Features stored per level entry."""
    log2_hashmap_size: int = 14
    """log2 of the entries per level table (levels with fewer grid points are stored densely)."""
    base_resolution: int = 8
    """Grid resolution of the coarsest level."""
    per_level_scale: float = 1.5
    """Resolution growth factor between levels."""
    combine: Literal["concat", "sum"] = "concat"
    """How the three planes' features are combined."""
    bound: Tuple[float, float, float, float, float, float] = (-0.16, -0.22, -0.16, 0.16, 0.26, 0.16)
    """Box (xmin, ymin, zmin, xmax, ymax, zmax) in metres (head frame) mapped to [0,1]^3."""
    impl: Literal["torch", "tcnn", "native", "auto"] = "auto"
    """Lookup implementation; "auto" = our native kernel when built for the device, else tcnn when importable on CUDA, else torch (the reference)."""
    init_range: float = 0.05
    """Tables start uniform in [-init_range, init_range]: random multi-resolution features from step 0, so
    the (zero-initialised) deformation heads can tell Gaussians apart before the tables have learned
    (tiny-cuda-nn's default 1e-4 leaves them nearly identical for hundreds of steps)."""


@dataclass
class AudioEncoderConfig:
    """Attention encoder over a window of per-frame audio features."""

    window: int = 4
    """Half-width k of the audio window (2k+1 frames, centred on the current frame)."""
    dim: int = 32
    """Width of the attention layers."""
    latent_dim: int = 16
    """Size of the output audio latent."""
    heads: int = 2
    """Attention heads."""
    layers: int = 1
    """Self-attention layers before the attention pooling."""
    causal: bool = False
    """Streaming mode: a frame sees at most `lookahead` future frames."""
    lookahead: int = 1
    """Future frames visible in causal mode (bounded look-ahead = latency of the stream)."""


@dataclass
class DeformConfig:
    """Per-Gaussian deformation MLP."""

    hidden: int = 64
    """Hidden width."""
    layers: int = 2
    """Hidden layers."""
    use_motion: bool = True
    """Condition on the capture's motion codes (teacher forcing from tracking in training; the motion
    prior's predictions when driven by audio). False: audio + blink only."""
    use_blink: bool = True
    """Condition on the blink value."""
    max_offset: float = 0.03
    """Bound on |Δmean| per axis in metres (tanh)."""
    skin: bool = True
    """Landmark skinning before the learned offsets: face and mouth Gaussians move with the motion codes'
    landmark displacements from the person's mean expression (Gaussian-RBF weights of width `skin_sigma`
    around the person's landmarks), so tracked or predicted lips and jaw move the avatar from step 0 and
    the network learns only what the landmarks miss (appearance, the inside of the mouth, wrinkles)."""
    skin_sigma: float = 0.006
    """Width (metres) of the skinning weights around each expression landmark."""
    deform_color: bool = True
    """Also predict a ΔRGB (colour logit) per Gaussian (teeth/tongue/shadows appearing as the mouth opens)."""
    pe_freqs: int = 6
    """Fourier frequencies of the canonical position (normalised to the triplane box) appended to the
    triplane feature as deformation input (0 = triplane feature only). Gives the net a spatial signal
    from step 0, before the hash tables have learned anything."""


@dataclass
class GaussianConfig:
    """Canonical Gaussians and their initialisation."""

    num_face: int = 3000
    """Initial face/head Gaussians (landmarks + head shell + random fill)."""
    num_mouth: int = 400
    """Initial inside-mouth Gaussians (a separate branch composited behind the face)."""
    num_torso: int = 600
    """Initial torso/neck Gaussians (0 disables the torso)."""
    init_scale: float = 0.006
    """Initial Gaussian radius in metres."""
    init_opacity: float = 0.3
    """Initial opacity."""
    color_from_triplane: bool = True
    """Colour = sigmoid(per-Gaussian logit + MLP(triplane feature)); False = per-Gaussian only."""
    head_radii: Tuple[float, float, float] = (0.085, 0.115, 0.105)
    """Ellipsoid semi-axes (x, y, z) in metres of the head shell used at initialisation."""


@dataclass
class ModelConfig:
    """The whole avatar model."""

    gaussians: GaussianConfig = field(default_factory=GaussianConfig)
    triplane: TriplaneConfig = field(default_factory=TriplaneConfig)
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    deform: DeformConfig = field(default_factory=DeformConfig)
    audio_dim: int = 32
    """Per-frame audio feature size D (set from the audio feature config)."""
    motion_dim: int = 0
    """Motion code size M (0 = no motion codes)."""


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict/list/python values (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


class ConfigError(ValueError):
    """Unknown key or wrongly typed value in a configuration."""


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass `cls` from nested dicts, strictly: an unknown key is an error naming it."""
    import typing

    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            raise ConfigError(f"unknown config key {where + k!r} (valid keys of {cls.__name__}: "
                              f"{', '.join(sorted(names))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        kwargs[f.name] = _coerce(hints[f.name], data[f.name], where + f.name)
    return cls(**kwargs)


def _coerce(tp: Any, v: Any, where: str) -> Any:
    import typing

    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, v, where + ".")
    if origin is typing.Literal:
        if v not in typing.get_args(tp):
            raise ConfigError(f"config key {where!r}: expected one of {typing.get_args(tp)}, got {v!r}")
        return v
    if origin is typing.Union:
        args = typing.get_args(tp)
        if v is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, v, where)
            except ConfigError:
                pass
        raise ConfigError(f"config key {where!r}: value {v!r} does not match {tp}")
    if origin in (tuple, list):
        if not isinstance(v, (list, tuple)):
            raise ConfigError(f"config key {where!r}: expected a list, got {v!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(v):
                raise ConfigError(f"config key {where!r}: expected {len(args)} values, got {len(v)}")
            return tuple(_coerce(a, x, where) for a, x in zip(args, v))
        inner = args[0] if args else Any
        vals = [_coerce(inner, x, f"{where}[{i}]") for i, x in enumerate(v)]
        return tuple(vals) if origin is tuple else vals
    if tp is bool:
        if not isinstance(v, bool):
            raise ConfigError(f"config key {where!r}: expected true/false, got {v!r}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"config key {where!r}: expected an integer, got {v!r}")
        return v
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"config key {where!r}: expected a number, got {v!r}")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            raise ConfigError(f"config key {where!r}: expected a string, got {v!r}")
        return v
    return v
