"""Self-driven renders of a capture's own frames (evaluation: `avatar eval CKPT --data CAPTURE`,
`avatar bench lipsync`).

Frame t is rendered from the capture's camera of frame t (the tracked head pose), with the audio
features of the capture's audio around t and its tracked blink; the motion codes are the tracked ones
("tracked": teacher forcing, what the avatar can reproduce), the motion prior's predictions from the
audio ("prior": what audio alone gives), or none (the person's mean expression). The view is the one
the avatar was trained on: the checkpoint's face window (meta "crop", `avatar train --config.data.crop`)
at its training size, and the ground truth is cut and resized the same way, so the two compare pixel
for pixel. The avatar is composited over the capture's background plate.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, Literal, Sequence

import numpy as np

from avatar.audio.timeline import DriveError
from avatar.runtime.sources import LoadedAvatar, audio_feature_config, prior_motion, recorded_prior

MotionSource = Literal["tracked", "prior", "none"]


@dataclass
class CaptureView:
    """The avatar's training view of a capture: face window (x0, y0, side) in stored pixels and the
    render size; intrinsics of frame i follow from the capture's."""

    x0: int
    y0: int
    side_w: int
    side_h: int
    width: int
    height: int

    @classmethod
    def of(cls, avatar: LoadedAvatar, ds) -> "CaptureView":
        crop = avatar.meta.get("crop")
        if crop:
            x0, y0, side = (int(v) for v in crop)
            sw = sh = side
        else:
            x0, y0, sw, sh = 0, 0, int(ds.width), int(ds.height)
        if x0 < 0 or y0 < 0 or x0 + sw > ds.width or y0 + sh > ds.height:
            raise DriveError(f"{avatar.path}: its training window {crop} does not fit the capture's "
                             f"{ds.width}x{ds.height} frames (was it trained on another capture?)")
        w = int(avatar.meta.get("width", sw))
        h = int(avatar.meta.get("height", sh))
        return cls(x0, y0, sw, sh, w, h)

    def K(self, K: np.ndarray) -> np.ndarray:
        """Capture intrinsics [3,3] -> this view's."""
        K = np.asarray(K, np.float32).copy()
        K[0, 2] -= self.x0
        K[1, 2] -= self.y0
        K[0] *= self.width / self.side_w
        K[1] *= self.height / self.side_h
        return K

    def image(self, img: np.ndarray, nearest: bool = False) -> np.ndarray:
        """A stored-size image [H0, W0, ...] -> the view [height, width, ...]."""
        import cv2

        cut = np.ascontiguousarray(img[self.y0:self.y0 + self.side_h, self.x0:self.x0 + self.side_w])
        if cut.shape[1] == self.width and cut.shape[0] == self.height:
            return cut
        return cv2.resize(cut, (self.width, self.height),
                          interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def render_capture(avatar: LoadedAvatar, ds, idx: Sequence[int], *, motion: MotionSource = "tracked",
                   prior=None, backend: str = "auto", log=None) -> Dict[str, object]:
    """Render capture frames `idx` self-driven. ds: a loaded capture (avatar.data.Capture).

    Returns {"pred": uint8 [T, h, w, 3], "gt": uint8 [T, h, w, 3] (the same view of the real frames),
    "masks": uint8 [T, h, w] labels, "fps": render frames/s, "latency_ms": per frame, "view": CaptureView,
    "motion": the motion source used}.
    """
    import torch

    from avatar.audio.features import feature_windows, frame_features

    idx = np.asarray(idx, np.int64)
    if idx.size == 0:
        raise DriveError("render_capture: no frames to render")
    if ds.audio is None:
        raise DriveError(f"{getattr(ds, 'root', 'the capture')}: has no audio.wav to drive the avatar")
    model = avatar.model
    view = CaptureView.of(avatar, ds)
    times = np.asarray(getattr(ds, "frame_times", np.arange(ds.num_frames)), np.int64)
    n_t = int(times.max()) + 1
    wav = np.asarray(ds.audio, np.float32)
    feats = frame_features(wav, float(ds.fps), n_t, audio_feature_config(model))  # [n_t, D]
    wins = feature_windows(feats, model.window)  # [n_t, 2k+1, D]
    codes = None
    if motion == "tracked":
        codes = np.asarray(ds.tracks["motion"], np.float32) if "motion" in (ds.tracks or {}) else None
        if codes is None:
            raise DriveError(f"{getattr(ds, 'root', 'the capture')}: has no tracked motion codes")
    elif motion == "prior":
        p = recorded_prior(avatar, prior)
        if p is None:
            raise DriveError("render_capture(motion='prior') needs a motion prior (none given or recorded)")
        tracks = prior_motion(avatar, wav, float(ds.fps), p)
        codes = np.stack([tracks.motion_at(int(times[i])) for i in range(ds.num_frames)])
    elif motion != "none":
        raise DriveError(f"render_capture: motion must be 'tracked', 'prior' or 'none', got {motion!r}")
    blink = np.asarray((ds.tracks or {}).get("blink", np.zeros(ds.num_frames)), np.float32)
    dev = model.gaussians.means.device
    bg = torch.from_numpy(view.image(np.asarray(ds.background, np.float32))).to(dev)
    pred, gt, masks = [], [], []
    t0 = time.perf_counter()
    for n, i in enumerate(idx):
        V = torch.as_tensor(np.asarray(ds.viewmats[i], np.float32))[None].to(dev)
        K = torch.from_numpy(view.K(ds.Ks[i]))[None].to(dev)
        m = None if codes is None else torch.from_numpy(codes[i]).to(dev)
        rgb, _ = model.render_frame(V, K, view.width, view.height, audio_window=wins[int(times[i])].to(dev),
                                    motion=m, blink=float(blink[i]), background=bg, backend=backend)
        pred.append((rgb[0].cpu().numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8))
        if log is not None and (n + 1) % 50 == 0:
            log(f"rendered {n + 1}/{len(idx)} frames")
    dt = time.perf_counter() - t0
    for i in idx:
        gt.append(view.image(ds.image_uint8(int(i))))
        masks.append(view.image(np.asarray(ds.mask(int(i)), np.uint8), nearest=True))
    return {"pred": np.stack(pred), "gt": np.stack(gt), "masks": np.stack(masks), "view": view,
            "fps": len(idx) / max(dt, 1e-9), "latency_ms": 1000.0 * dt / len(idx), "motion": motion}

