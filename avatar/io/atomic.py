"""The one atomic writer: write to a temporary file in the destination folder, then os.replace()
(readers never see a half-written file; a failed or interrupted write leaves the old file).

    with atomic_path(dest, suffix=".npz") as tmp:   # for writers that need a path (np.savez, torch.save,
        np.savez(tmp, **arrays)                     # ffmpeg, ...): tmp is a fresh file next to dest
    atomic_write_bytes(dest, data) / atomic_write_text(dest, text) / atomic_write_json(dest, obj)

The temporary file is hidden (`.NAME.XXXXXX.tmp[suffix]`), unique per call (threads and processes never
share one), removed on any exception (KeyboardInterrupt included), and made rw-r--r-- before the
replace. `fsync=True` flushes it to disk first (checkpoints).
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]


@contextmanager
def atomic_path(dest: PathLike, suffix: str = "", fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path in dest's folder; on success os.replace() it onto `dest`, on any exception
    remove it and re-raise. `suffix` ends the temporary name (np.savez appends ".npz" otherwise; ffmpeg
    picks the container by it)."""
    dest = Path(dest)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp" + suffix, dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write bytes to path atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write UTF-8 text to path atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj, indent: int = 1) -> None:
    """Write obj as JSON (+ a final newline) to path atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")
