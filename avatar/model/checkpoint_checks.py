"""Checks of an avatar checkpoint before anything is allocated from it (used by AvatarModel.read_checkpoint
and AvatarModel.from_checkpoint_dict): the file is a PyTorch file at all, the dict has the keys and types
an avatar checkpoint has, every tensor has the shape its model config implies (the model is built on the
"meta" device first: shapes without memory), and the config does not ask for more than
MAX_MODEL_BYTES. Each failure is one CheckpointError sentence naming the file and what was expected."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import torch

MAX_MODEL_BYTES = 8 * 2**30
"""Largest model (parameters + buffers) a checkpoint may describe; the avatars `avatar train` writes are
tens of MB."""

# weights older checkpoints may lack (AvatarModel.from_checkpoint_dict keeps their defaults)
OPTIONAL = ("motion_mean", "motion_scale", "skin_points", "skin_metres", "skin_side", "skin_seam_of",
            "skin_seam_points", "skin_seam_ids", "skin_up", "skin_gain")  # buffers newer than some checkpoints

_HINT = "expected an avatar checkpoint written by `avatar train` (avatar.pt)"


def check_file(path: Path, error: type) -> None:
    """`error` when `path` cannot be a torch.save file (empty, or neither a zip nor a pickle)."""
    size = path.stat().st_size
    if size == 0:
        raise error(f"{path}: file is empty (0 bytes); {_HINT}")
    with open(path, "rb") as f:
        head = f.read(8)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        shown = head.decode("ascii", "replace").strip() or repr(head)
        raise error(f"{path}: not a PyTorch checkpoint file (it starts with {shown!r}); {_HINT}")


def load_error(path: Path, e: BaseException, error: type) -> BaseException:
    """One sentence for a torch.load failure (never torch's advice to turn off weights_only)."""
    text = str(e)
    if "weights_only" in text or "Unsupported global" in text or "Weights only load failed" in text:
        return error(f"{path}: holds Python objects other than tensors and plain values, which avatar does "
                     f"not load; {_HINT}")
    first = text.strip().splitlines()[0][:160] if text.strip() else "damaged or truncated"
    return error(f"{path}: cannot read the checkpoint ({type(e).__name__}: {first}); the file is damaged, "
                 f"truncated or not a checkpoint; {_HINT}")


def _shape(t: Any):
    return tuple(t.shape) if isinstance(t, torch.Tensor) else None


def check_dict(d: Dict[str, Any], where: str, error: type) -> None:
    """Structure, tensor shapes against the model config, and size (see the module docstring)."""
    from avatar.model.avatar import AvatarModel
    from avatar.model.config import ModelConfig, from_dict
    from avatar.model.gaussians import Gaussians

    for key, kind in (("model_config", dict), ("gaussians", dict), ("modules", dict)):
        if not isinstance(d.get(key), kind):
            raise error(f"{where}: the checkpoint has no {key!r} {kind.__name__} (damaged or not written by "
                        f"`avatar train`)")
    gs = d["gaussians"]
    need = [f"params.{k}" for k in Gaussians.PARAM_NAMES] + ["extras.labels"]
    for k in need:
        if _shape(gs.get(k)) is None:
            raise error(f"{where}: gaussians[{k!r}] is missing or not a tensor")
    N = gs["params.means"].shape[0] if gs["params.means"].ndim == 2 else -1
    expect = {"params.means": (N, 3), "params.quats": (N, 4), "params.log_scales": (N, 3),
              "params.opacities": (N,), "extras.labels": (N,)}
    for k, shape in expect.items():
        if _shape(gs[k]) != shape:
            raise error(f"{where}: gaussians[{k!r}] has shape {list(gs[k].shape)}, expected {list(shape)} "
                        f"(N = {N} Gaussians from params.means)")
    for k, v in gs.items():
        if isinstance(v, torch.Tensor) and (v.ndim == 0 or v.shape[0] != N):
            raise error(f"{where}: gaussians[{k!r}] has shape {list(v.shape)}; every per-Gaussian tensor must "
                        f"start with N = {N}")
    try:
        cfg = from_dict(ModelConfig, d["model_config"], "model_config.")
        with torch.device("meta"):
            g = Gaussians(torch.empty(N, 3), torch.empty(N, dtype=gs["extras.labels"].dtype))
            model = AvatarModel(cfg, g, d.get("audio_config") or {}, d.get("motion_space"))
    except error:
        raise
    except Exception as e:  # noqa: BLE001 - a config the model cannot be built from
        raise error(f"{where}: its model_config cannot build a model ({type(e).__name__}: "
                    f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith("gaussians.")}
    nbytes = sum(v.numel() * v.element_size() for v in expected.values())
    if nbytes > MAX_MODEL_BYTES:
        raise error(f"{where}: its model_config describes a {nbytes / 2**30:.1f} GiB model, more than the "
                    f"{MAX_MODEL_BYTES / 2**30:g} GiB an avatar may have (damaged config?)")
    mods = d["modules"]
    for k, v in mods.items():
        if k in expected and _shape(v) != tuple(expected[k].shape):
            raise error(f"{where}: weight {k!r} has shape {list(v.shape) if _shape(v) else type(v).__name__}, "
                        f"but its model_config implies {list(expected[k].shape)}")
    missing = [k for k in expected if k not in mods and k not in OPTIONAL]
    unexpected = [k for k in mods if k not in expected]
    if missing or unexpected:
        raise error(f"{where}: weights do not match the model config (missing {missing[:5]}, unexpected "
                    f"{unexpected[:5]})")
