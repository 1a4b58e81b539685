"""avatar.io.atomic: the one atomic writer (temp file in the destination folder, then os.replace)."""
import os
import stat

import numpy as np
import pytest

from avatar.io.atomic import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text


def test_writes_and_replaces(tmp_path):
    p = tmp_path / "a.json"
    atomic_write_json(p, {"x": 1})
    assert p.read_text() == '{\n "x": 1\n}\n'
    atomic_write_text(p, "new")
    assert p.read_text() == "new"
    atomic_write_bytes(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["a.json"]  # no temp file left


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_failure_keeps_the_old_file_and_removes_the_temp(tmp_path, exc):
    p = tmp_path / "t.npz"
    atomic_write_bytes(p, b"old")
    with pytest.raises(exc):
        with atomic_path(p, suffix=".npz") as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".t.npz.") and tmp.suffix == ".npz"
            np.savez(tmp, a=np.zeros(3))  # a path-taking writer: the suffix keeps np.savez from adding one
            raise exc()
    assert p.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["t.npz"]


def test_path_writer_and_unique_temps(tmp_path):
    p = tmp_path / "t.npz"
    with atomic_path(p, suffix=".npz", fsync=True) as t1, atomic_path(p, suffix=".npz") as t2:
        assert t1 != t2
        np.savez(t1, a=np.arange(3))
        np.savez(t2, a=np.arange(4))
    with np.load(p) as z:
        assert z["a"].tolist() == [0, 1, 2]  # the outer (last to finish) write wins
    assert sorted(os.listdir(tmp_path)) == ["t.npz"]
