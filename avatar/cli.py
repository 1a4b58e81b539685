"""The one command-line entry point: `avatar <command> [...]` (tyro).

Every command is a dataclass with a `main()` method, living in the module that owns it; this file
only lists them. Command modules must keep heavy imports (torch, cv2, mediapipe) inside `main()` so
that `avatar --help` stays fast and importing a command compiles nothing.

A value in COMMANDS is either (module, class name) for a command, or a dict of those for a group
(`avatar bench rasterize`, `avatar prior train`).
"""
from __future__ import annotations

import dataclasses
import importlib
import sys
from typing import Annotated, Any, Dict, Tuple, Union

import tyro

Spec = Union[Tuple[str, str], Dict[str, Tuple[str, str]]]

COMMANDS: Dict[str, Spec] = {
    "demo": ("avatar.commands.demo", "Demo"),
    "render": ("avatar.commands.render", "Render"),
    "drive": ("avatar.commands.drive", "Drive"),
    "serve": ("avatar.runtime.server", "Serve"),
    "export": ("avatar.commands.export", "Export"),
    "train": ("avatar.train.trainer", "Train"),
    "synth": ("avatar.synth.video", "Synth"),
    "capture": ("avatar.commands.capture", "Capture"),
    "eval": ("avatar.commands.eval", "Eval"),
    "prior": {"train": ("avatar.prior.api", "PriorTrain"), "finetune": ("avatar.prior.api", "PriorFinetune")},
    "bench": {
        "rasterize": ("avatar.commands.bench.rasterize", "BenchRasterize"),
        "train": ("avatar.commands.bench.train", "BenchTrain"),
        "drive": ("avatar.commands.bench.drive", "BenchDrive"),
        "capture": ("avatar.commands.bench.capture", "BenchCapture"),
        "prior": ("avatar.commands.bench.prior", "BenchPrior"),
    },
}

GROUP_HELP = {
    "bench": "Benchmarks that write JSON under benchmarks/results/.",
    "prior": "The generic, person-agnostic audio-to-motion prior.",
}


def _load(spec: Tuple[str, str]) -> type:
    module, name = spec
    return getattr(importlib.import_module(module), name)


def _doc(cls: type) -> str:
    return (cls.__doc__ or "").strip().split("\n\n")[0]


def _union(entries: Dict[str, Spec]) -> Any:
    members = []
    for name, spec in entries.items():
        if isinstance(spec, dict):
            sub = _union(spec)
            group = dataclasses.make_dataclass(
                f"{name.capitalize()}Group",
                [("command", tyro.conf.OmitSubcommandPrefixes[sub])],
                namespace={"main": lambda self: self.command.main()},
            )
            members.append(Annotated[group, tyro.conf.subcommand(name, description=GROUP_HELP.get(name, ""))])
        else:
            cls = _load(spec)
            members.append(Annotated[cls, tyro.conf.subcommand(name, description=_doc(cls))])
    return Union[tuple(members)]  # type: ignore[return-value]


def entrypoint(argv: list[str] | None = None) -> None:
    """Parse `avatar <command> ...` and run the command's `main()`."""
    cmd = tyro.cli(_union(COMMANDS), args=argv if argv is not None else sys.argv[1:],
                   prog="avatar", description="Gaussian-splatting talking-head avatars.")
    result = cmd.main()
    if isinstance(result, int):
        sys.exit(result)


if __name__ == "__main__":
    entrypoint()
