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
from typing import Annotated, Any, Dict, Sequence, Tuple, Union

import tyro

Spec = Union[Tuple[str, str], Dict[str, Tuple[str, str]]]

COMMANDS: Dict[str, Spec] = {
    "demo": ("avatar.commands.demo", "Demo"),
    "render": ("avatar.commands.render", "Render"),
    "drive": ("avatar.commands.drive", "Drive"),
    "serve": ("avatar.commands.serve", "Serve"),
    "export": ("avatar.commands.export", "Export"),
    "train": ("avatar.commands.train", "Train"),
    "synth": ("avatar.commands.synth", "Synth"),
    "capture": ("avatar.commands.capture", "Capture"),
    "eval": ("avatar.commands.eval", "Eval"),
    "prior": {"train": ("avatar.commands.prior", "PriorTrain"), "finetune": ("avatar.commands.prior", "PriorFinetune")},
    "bench": {
        "rasterize": ("avatar.commands.bench.rasterize", "BenchRasterize"),
        "train": ("avatar.commands.bench.train", "BenchTrain"),
        "drive": ("avatar.commands.bench.drive", "BenchDrive"),
        "capture": ("avatar.commands.bench.capture", "BenchCapture"),
        "prior": ("avatar.commands.bench.prior", "BenchPrior"),
        "lipsync": ("avatar.commands.bench.lipsync", "BenchLipsync"),
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


def _union(entries: Dict[str, Spec], argv: Sequence[str] = ()) -> Any:
    members = []
    for name, spec in entries.items():
        if isinstance(spec, dict):
            sub = _union(spec, argv[1:] if argv and argv[0] == name else ())
            group = dataclasses.make_dataclass(
                f"{name.capitalize()}Group",
                [("command", tyro.conf.OmitSubcommandPrefixes[sub])],
                namespace={"main": lambda self: self.command.main()},
            )
            members.append(Annotated[group, tyro.conf.subcommand(name, description=GROUP_HELP.get(name, ""))])
        else:
            cls = _load(spec)
            kw = {}
            if hasattr(cls, "cli_default") and argv and argv[0] == name:
                kw["default"] = cls.cli_default(argv[1:])  # e.g. `avatar train`: the preset's config
            members.append(Annotated[cls, tyro.conf.subcommand(name, description=_doc(cls), **kw)])
    return Union[tuple(members)]  # type: ignore[return-value]


def entrypoint(argv: list[str] | None = None) -> None:
    """Parse `avatar <command> ...` and run the command's `main()`."""
    args = list(argv if argv is not None else sys.argv[1:])
    try:
        cmd = tyro.cli(_union(COMMANDS, args), args=args,
                       prog="avatar", description="Gaussian-splatting talking-head avatars.")
    except KeyboardInterrupt:  # Ctrl-C while the command modules import (torch takes seconds)
        print(f"avatar {_name(args)}: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(run_command(cmd, args))


# what a rerun does after Ctrl-C, for the commands that resume
RESUME = {"capture": "rerun the same command to resume (finished stages are kept)",
          "train": "rerun with --resume to continue from the last checkpoint"}


def _name(args: Sequence[str]) -> str:
    return " ".join(a for a in args[:2] if not a.startswith("-") and a in _names()) or "command"


def _interrupt_on_sigterm():
    """SIGTERM (kill, a closed terminal's job control) unwinds like Ctrl-C, so temporary files and folders
    are removed on that exit path too. -> a function restoring the previous handler."""
    import signal
    import threading

    def handler(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, old)


def run_command(cmd: Any, args: Sequence[str]) -> int:
    """cmd.main() under the one error convention of avatar.commands (a one-line error, exit 2; Ctrl-C:
    one line, exit 130)."""
    from avatar.commands import EXIT_INTERRUPTED, fail, is_user_error

    name = _name(args)
    restore = _interrupt_on_sigterm()
    try:
        result = cmd.main()
    except KeyboardInterrupt:
        hint = RESUME.get(name.split()[0])
        print(f"avatar {name}: interrupted" + (f"; {hint}" if hint else ""), file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - user errors become one line; bugs keep their traceback
        if not is_user_error(e):
            raise
        return fail(name, e)
    finally:
        restore()
    return result if isinstance(result, int) else 0


def _names() -> set:
    out = set(COMMANDS)
    for spec in COMMANDS.values():
        if isinstance(spec, dict):
            out |= set(spec)
    return out


if __name__ == "__main__":
    entrypoint()
