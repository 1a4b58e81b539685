"""Tiny in-memory fake captures with the avatar.data dataset attributes (helpers, no tests here).

A frontal camera looks at a drawn head: a skin ellipse on a gradient background with a dark mouth whose
height follows a known openness signal, red lips, and audio whose loudness follows the same signal, so a
model that learns audio -> mouth has something real to learn. Used in-process and by the kill/resume
subprocess (`python tests/test_train_fakes.py OUT STEPS`).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


class FakeCapture:
    """Same attributes as avatar.data.load_capture(...)'s dataset (contract in notes/CONTRACTS.md)."""

    def __init__(self, num_frames: int = 44, size: int = 48, fps: float = 25.0, seed: int = 0, dist: float = 0.6):
        from avatar.data.face_model import CANONICAL

        rng = np.random.default_rng(seed)
        F, W, H = num_frames, size, size
        self.num_frames, self.fps, self.width, self.height = F, float(fps), W, H
        f = 0.75 * W * dist / 0.25  # head (~0.2 m) spans ~60 % of the frame
        K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], np.float32)
        V = np.eye(4, dtype=np.float32)
        V[2, 3] = dist
        self.Ks = np.repeat(K[None], F, 0)
        self.viewmats = np.repeat(V[None], F, 0)
        self.camera_ids = np.zeros(F, np.int32)
        self.frame_times = np.arange(F, dtype=np.int64)
        # mouth openness: smooth random signal in [0, 1] with open and closed stretches
        raw = rng.uniform(-1, 1, F + 8)
        sm = np.convolve(raw, np.ones(5) / 5, mode="same")[4:F + 4]
        self.openness = np.clip((sm - sm.min()) / (np.ptp(sm) + 1e-9) * 1.4 - 0.2, 0, 1).astype(np.float32)
        # audio: voiced tone + noise with the openness as envelope (16 kHz)
        spf = int(16000 / fps)
        t = np.arange(F * spf) / 16000.0
        env = np.repeat(self.openness, spf)
        self.audio = (env * (0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 1250 * t)
                             + 0.05 * rng.standard_normal(t.shape))).astype(np.float32)
        # projected canonical landmarks
        P = CANONICAL @ V[:3, :3].T + V[:3, 3]
        lm2 = (P[:, :2] / P[:, 2:3]) * f + np.array([W / 2, H / 2])
        self._lm2 = lm2.astype(np.float32)
        lip = lm2[[61, 291, 0, 17]]
        self._mouth_c = np.array([(lip[0, 0] + lip[1, 0]) / 2, (lip[2, 1] + lip[3, 1]) / 2])
        self._mouth_w = (lip[1, 0] - lip[0, 0]) / 2
        self._head_c = np.array([W / 2, H / 2 + 0.01 * f / dist])
        self._head_r = np.array([0.085, 0.11]) * f / dist
        yy, xx = np.mgrid[0:H, 0:W] + 0.5
        self._xx, self._yy = xx, yy
        self.background = np.stack([0.25 + 0.5 * xx / W, 0.3 + 0.2 * yy / H, 0.6 - 0.2 * xx / W], -1).astype(np.float32)
        self.tracks = {
            "landmarks2d": np.repeat(self._lm2[None], F, 0),
            "landmarks3d": np.repeat(CANONICAL[None].astype(np.float32), F, 0),
            "motion": np.stack([self.openness, np.zeros(F)], 1).astype(np.float32),
            "blink": np.zeros(F, np.float32),
            "mouth_open": self.openness.copy(),
            "head_pose": np.repeat(np.linalg.inv(V)[None], F, 0).astype(np.float32),
        }
        n_test = max(1, F // 11)
        self.split = {"train": np.arange(F - n_test, dtype=np.int64), "test": np.arange(F - n_test, F, dtype=np.int64)}

    def _labels(self, i: int) -> np.ndarray:
        xx, yy = self._xx, self._yy
        head = ((xx - self._head_c[0]) / self._head_r[0]) ** 2 + ((yy - self._head_c[1]) / self._head_r[1]) ** 2 <= 1
        mh = 0.1 * self._mouth_w + 0.45 * self._mouth_w * self.openness[i]
        mouth = ((xx - self._mouth_c[0]) / self._mouth_w) ** 2 + ((yy - self._mouth_c[1]) / mh) ** 2 <= 1
        lab = np.zeros(xx.shape, np.uint8)
        lab[head] = 2
        lab[mouth & head] = 3
        return lab

    def mask(self, i: int) -> np.ndarray:
        return self._labels(i)

    def image(self, i: int) -> np.ndarray:
        lab = self._labels(i)
        img = self.background.copy()
        shade = 0.85 - 0.15 * ((self._yy - self._head_c[1]) / self._head_r[1])[..., None]
        img[lab == 2] = (np.array([0.85, 0.62, 0.5]) * shade)[lab == 2]
        xx, yy = self._xx, self._yy
        mh = 0.1 * self._mouth_w + 0.45 * self._mouth_w * self.openness[i]
        d = ((xx - self._mouth_c[0]) / (self._mouth_w * 1.25)) ** 2 + ((yy - self._mouth_c[1]) / (mh + 0.3 * self._mouth_w)) ** 2
        img[(d <= 1) & (lab == 2)] = [0.75, 0.25, 0.3]  # lips
        img[lab == 3] = [0.15, 0.03, 0.05]
        return img.astype(np.float32)


def tiny_overrides(steps_static: int = 60, steps_deform: int = 120, steps_joint: int = 160, **extra):
    """Config overrides for a fast CPU run on FakeCapture(size=48)."""
    o = {
        "data": {"max_size": 48},
        "model": {"gaussians": {"num_face": 500, "num_mouth": 80, "num_torso": 0, "init_scale": 0.008},
                  "triplane": {"n_levels": 4, "log2_hashmap_size": 10},
                  "audio": {"window": 2, "dim": 16, "latent_dim": 8},
                  "deform": {"hidden": 32}},
        "strategy": {"refine_start": 20, "refine_stop": steps_static, "refine_every": 20, "max_gaussians": 1200},
        "phases": [{"name": "static", "until": steps_static},
                   {"name": "deform", "until": steps_deform, "deform": True, "train_canonical": False,
                    "train_deform": True},
                   {"name": "joint", "until": steps_joint, "deform": True, "train_canonical": True,
                    "train_deform": True, "lr_scale": 0.5}],
        "checkpoint_every": 20, "preview_every": 0, "log_every": 5, "logger": "none", "threads": 1,
    }
    o.update(extra)
    return o


if __name__ == "__main__":  # subprocess entry: python tests/test_train_fakes.py OUT_DIR BACKEND
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from avatar.train.trainer import Trainer
    from avatar.train.config import load_config

    ovr = tiny_overrides(steps_static=40, steps_deform=200, steps_joint=400, checkpoint_every=10,
                         backend=sys.argv[2])
    tr = Trainer(load_config(None, ovr), FakeCapture(num_frames=24, size=32, seed=1), Path(sys.argv[1]),
                 progress=False)
    tr.run(callback=lambda step, stats: print(f"step {step}", flush=True))
