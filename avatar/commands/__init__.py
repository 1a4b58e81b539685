"""The CLI layer: one thin tyro dataclass with `main()` per `avatar <command>` (see avatar/cli.py).

One error convention for every command: bad input ends in ONE line on stderr,
`avatar <command>: error: <what, which file/argument, what was expected>`, and exit code 2;
Ctrl-C ends in one line and exit code 130. `fail()` prints that line; `avatar.cli.entrypoint` applies
the same convention to a user error a command did not catch itself (`is_user_error`), while a bug
still shows its traceback.
"""
from __future__ import annotations

import sys

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def fail(command: str, message: object) -> int:
    """Print `avatar <command>: error: <message>` on stderr (one line) and return EXIT_BAD_INPUT."""
    text = " ".join(str(message).split()) or "failed"
    print(f"avatar {command}: error: {text}", file=sys.stderr, flush=True)
    return EXIT_BAD_INPUT


def is_user_error(e: BaseException) -> bool:
    """Errors that describe bad input rather than a bug: the project's own error types (ValueError
    subclasses defined in avatar.* / capture.*, DatasetError, TrainingError) and file-system errors
    naming a path (missing file, no permission, a directory where a file was expected)."""
    own = type(e).__module__.split(".")[0] in ("avatar", "capture")
    if own and isinstance(e, (ValueError, RuntimeError)) or own and type(e).__name__.endswith("Error"):
        return True
    return isinstance(e, OSError) and getattr(e, "filename", None) is not None
