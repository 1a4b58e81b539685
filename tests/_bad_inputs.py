"""Helpers of the bad-input suites (tests/test_bad_inputs_*.py): run `avatar ...` in-process through the
real entry point, and a checksum listing of a folder to show that no user file changed."""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Dict, Sequence, Tuple

ONE_LINE = re.compile(r"^avatar [a-z ]+: error: \S.*$")


def listing(root: Path) -> Dict[str, str]:
    """{relative path: sha1} of every file under root (hidden ones included); folders as 'dir'."""
    out: Dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha1(Path(p).read_bytes()).hexdigest()
    return out


def cli(capsys, args: Sequence[str]) -> Tuple[int, str, str]:
    """`avatar ARGS` in this process -> (exit code, stdout, stderr). A bug's traceback fails the test.
    The command line is parsed by tyro over that one command (avatar.cli's table and run_command, the
    real error convention), so a half-edited other command module cannot break these tests."""
    import tyro

    from avatar import cli as C

    args = [str(a) for a in args]
    capsys.readouterr()
    try:
        cls = C._load(C.COMMANDS[args[0]])
        default = cls.cli_default(args[1:]) if hasattr(cls, "cli_default") else None
        cmd = tyro.cli(cls, args=args[1:], prog=f"avatar {args[0]}", default=default)
        code = C.run_command(cmd, args)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, command: str, *needles: str) -> str:
    """Exit 2 and one stderr line `avatar COMMAND: error: ...` containing every needle, the last line; before
    it at most the command's own `[COMMAND] ...` progress/info lines (no traceback, no third-party noise)."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (code, err)
    assert lines and all(ln.startswith(f"[{command}]") for ln in lines[:-1]), err
    line = lines[-1]
    assert ONE_LINE.match(line) and line.startswith(f"avatar {command}: error: "), line
    assert "Traceback" not in err
    for n in needles:
        assert n in line, (n, line)
    return line


def run_one(args: Sequence[str]) -> int:
    """`avatar ARGS` (one command parsed alone, as cli() does) -> exit code; the subprocess entry below."""
    import tyro

    from avatar import cli as C

    cls = C._load(C.COMMANDS[args[0]])
    default = cls.cli_default(args[1:]) if hasattr(cls, "cli_default") else None
    cmd = tyro.cli(cls, args=list(args[1:]), prog=f"avatar {args[0]}", default=default)
    return C.run_command(cmd, list(args))


if __name__ == "__main__":  # python tests/_bad_inputs.py capture VIDEO --out DIR ...
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(run_one(sys.argv[1:]))
