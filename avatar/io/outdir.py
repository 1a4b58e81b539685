"""Output folders are ours or refused: the one place that decides whether a command may write into a folder.

A folder a command made carries a marker, `.avatar-output.json`, holding what made it (`kind`: "capture",
"frames", "train", "ply-frames", ...) and a manifest of the files the tool wrote there (paths relative to
the folder; an entry ending in "/" owns that whole subtree, e.g. a capture's `.capture/` work folder).

    owned = claim_dir(out, "capture", arg="--out", inputs=[video])   # new / empty / ours, else OutputDirError
    owned.add("images/000000.png", ...)      # written to the manifest BEFORE the files exist (write-ahead)
    owned.remove_owned("images/")            # deletes only listed files; a user's own files stay

Rules (claim_dir / check_dir):
  * a path that does not exist: created, marked, ours;
  * an existing folder with our marker of the same kind: ours; another kind: refused;
  * an existing EMPTY folder: marked, ours;
  * an existing folder that `adopt(path)` recognises as made by an older version (e.g. a capture folder with
    .capture/stages/): marked with the files adopt lists, ours;
  * anything else (a folder with files we did not write, a file, the input itself): refused with one
    sentence naming the argument, the path and what was expected.
`publish_dir(tmp, dst, kind)` moves a finished temporary folder into place under the same rules (an
existing folder of ours keeps the files it did not list).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Union

from avatar.io.atomic import atomic_write_json

MARKER = ".avatar-output.json"
PathLike = Union[str, os.PathLike]


class OutputDirError(ValueError):
    """An output path the command may not write to (the message names the argument and the path)."""


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def refuse_input_as_output(out: PathLike, inputs: Iterable[Optional[PathLike]], arg: str = "--out") -> None:
    """OutputDirError when `out` is one of `inputs` (writing there would replace the input)."""
    out = Path(out)
    for p in inputs:
        if p is not None and str(p) != "procedural" and _same(out, Path(p)):
            raise OutputDirError(f"{arg} {out} is also an input of this command; writing there would replace "
                                 f"the input: choose another output path")


def check_writable_parent(path: PathLike, arg: str = "--out") -> None:
    """OutputDirError unless `path`'s nearest existing ancestor is a folder we may write into."""
    p = Path(path).absolute()
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputDirError(f"{arg} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputDirError(f"{arg} {path}: no permission to write in {parent}")


class OwnedDir:
    """A folder of ours and its manifest (see the module docstring)."""

    def __init__(self, root: Path, kind: str, files: Iterable[str] = ()):
        self.root = Path(root)
        self.kind = kind
        self.files = set(files)

    @property
    def marker(self) -> Path:
        return self.root / MARKER

    def save(self) -> None:
        atomic_write_json(self.marker, {"tool": "avatar", "kind": self.kind, "version": 1,
                                        "files": sorted(self.files)})

    def add(self, *rel: str) -> None:
        """List files (relative paths, or "sub/" subtrees) as ours; saved before the caller writes them."""
        new = {str(r) for r in rel} - self.files
        if new:
            self.files |= new
            self.save()

    def owns(self, rel: str) -> bool:
        rel = str(rel)
        return rel in self.files or any(f.endswith("/") and rel.startswith(f) for f in self.files)

    def remove_owned(self, prefix: str = "") -> int:
        """Delete the listed files under `prefix` (and listed subtrees); keep everything else. -> count."""
        n = 0
        for rel in sorted(f for f in self.files if f.startswith(prefix)):
            p = self.root / rel
            if rel.endswith("/"):
                if p.is_dir():
                    shutil.rmtree(p)
                    n += 1
            elif p.is_file() or p.is_symlink():
                p.unlink()
                n += 1
            self.files.discard(rel)
        self.save()
        return n


def _read_marker(path: Path) -> Optional[dict]:
    m = path / MARKER
    if not m.is_file():
        return None
    try:
        d = json.loads(m.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) and d.get("tool") == "avatar" else None


def _visible(path: Path) -> List[str]:
    return sorted(x.name for x in path.iterdir())


def check_dir(path: PathLike, kind: str, *, arg: str = "--out", inputs: Sequence[Optional[PathLike]] = (),
              adopt: Optional[Callable[[Path], Optional[List[str]]]] = None) -> Optional[OwnedDir]:
    """Decide without writing: None when `path` does not exist yet (ours to create), an OwnedDir when it is
    ours (marker, empty, or adopted: the marker is then written), else OutputDirError."""
    p = Path(path)
    refuse_input_as_output(p, inputs, arg)
    if p.exists() and not p.is_dir():
        raise OutputDirError(f"{arg} {p} is a file; expected a folder (a new one, an empty one, or one "
                             f"made by this command)")
    if not p.exists():
        check_writable_parent(p, arg)
        return None
    if not os.access(p, os.W_OK | os.X_OK):
        raise OutputDirError(f"{arg} {p}: no permission to write in this folder")
    m = _read_marker(p)
    if m is not None:
        if m.get("kind") != kind:
            raise OutputDirError(f"{arg} {p} is a {m.get('kind')!r} folder made by another avatar command, "
                                 f"not a {kind!r} folder; choose another folder")
        return OwnedDir(p, kind, m.get("files") or [])
    names = _visible(p)
    if not names:
        d = OwnedDir(p, kind)
        d.save()
        return d
    files = adopt(p) if adopt is not None else None
    if files is not None:
        d = OwnedDir(p, kind, files)
        d.save()
        return d
    shown = ", ".join(repr(n) for n in names[:3]) + (", ..." if len(names) > 3 else "")
    raise OutputDirError(f"{arg} {p} already exists and holds files this tool did not write ({shown}); "
                         f"refusing to write there: give a new or empty folder (avatar writes only into "
                         f"folders it made, marked by {MARKER})")


def claim_dir(path: PathLike, kind: str, *, arg: str = "--out", inputs: Sequence[Optional[PathLike]] = (),
              adopt: Optional[Callable[[Path], Optional[List[str]]]] = None) -> OwnedDir:
    """check_dir, creating (and marking) the folder when it does not exist. -> OwnedDir."""
    d = check_dir(path, kind, arg=arg, inputs=inputs, adopt=adopt)
    if d is not None:
        return d
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputDirError(f"{arg} {p}: cannot create the folder ({e.strerror or e})") from None
    d = OwnedDir(p, kind)
    d.save()
    return d


def publish_dir(tmp: PathLike, dst: PathLike, kind: str, *, arg: str = "--out") -> OwnedDir:
    """Move the finished folder `tmp` (every file in it is ours) to `dst`: renamed into place when `dst`
    does not exist; into a folder of ours, the files listed there are replaced and unlisted ones kept."""
    tmp, dst = Path(tmp), Path(dst)
    files = sorted(str(f.relative_to(tmp)) for f in tmp.rglob("*") if f.is_file() and f.name != MARKER)
    d = check_dir(dst, kind, arg=arg)
    if d is None:
        OwnedDir(tmp, kind, files).save()
        os.replace(tmp, dst)
        return OwnedDir(dst, kind, files)
    clash = [r for r in files if (dst / r).exists() and not d.owns(r)]
    if clash:
        raise OutputDirError(f"{arg} {dst}: {clash[0]!r} there was not written by this tool; refusing to "
                             f"replace it: move it away or choose another folder")
    d.remove_owned()
    d.add(*files)
    for rel in files:
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / rel, target)
    shutil.rmtree(tmp, ignore_errors=True)
    return d
