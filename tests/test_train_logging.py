"""Metric writers: tensorboard writes event files, null discards, wandb is optional with a clear error."""
import numpy as np
import pytest

from avatar.train.writers import NullWriter, TensorboardWriter, make_writer


def test_tensorboard_writer_writes_events(tmp_path):
    w = make_writer("tensorboard", tmp_path)
    assert isinstance(w, TensorboardWriter)
    w.scalars({"train/loss": 0.5}, 3)
    w.image("preview", np.zeros((8, 8, 3), np.float32), 3)
    w.close()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_null_and_bad_kinds(tmp_path):
    assert isinstance(make_writer("none", tmp_path), NullWriter)
    with pytest.raises(ValueError, match="logger"):
        make_writer("stdout", tmp_path)


def test_wandb_is_optional(tmp_path, monkeypatch):
    try:
        import wandb  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="pip install wandb"):
            make_writer("wandb", tmp_path)
    else:
        pytest.skip("wandb installed: not exercised offline here")
