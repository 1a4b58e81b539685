"""Frame sources: what plays an avatar from audio.

* `ProceduralHeadSource`: the built-in procedural head; its mouth follows the audio envelope.
* `load_avatar` -> `LoadedAvatar` (an AvatarModel checkpoint with its meta), `apply_capture_defaults`.
* `recorded_prior` / `prior_motion` -> `MotionTracks`: the motion prior's codes and blinks for an audio
  (through avatar.prior.api.predict_prior, the one inference path).
* `AvatarSource`: a trained avatar as a streaming FrameSource (drive and serve).
* `GaussianFrames`: the same per-frame Gaussians without rendering (export).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from avatar.audio.stream import (
    EnvelopeConfig,
    MouthEnvelope,
    StreamingMelFeatures,
    WholeAudioFeatures,
)
from avatar.audio.timeline import DriveError, num_frames
from avatar.runtime.blink import BlinkConfig, BlinkSchedule
from avatar.runtime.camera_path import Camera, FixedPose, PoseSource, frontal_camera
from avatar.runtime.stream import Backdrop, Conditioner, StreamingSource
from avatar.runtime.view import ViewConfig, cameras_for, procedural_camera


class ProceduralHeadSource(StreamingSource):
    """FrameSource over avatar.synth.head: mouth opening follows the audio envelope,
    blinks from a BlinkSchedule. Needs no checkpoint; fast enough for server and page tests.

    With a fixed pose, renders are cached per quantised expression (`mouth_levels` x
    `blink_levels` entries at most), so a stream costs at most that many rasterize calls."""

    def __init__(self, view: Optional[ViewConfig] = None, fps: float = 25.0,
                 pose: Optional[PoseSource] = None, backdrop: Optional[Backdrop] = None,
                 envelope: Optional[EnvelopeConfig] = None, blink: Optional[BlinkConfig] = None,
                 spacing: float = 0.006, mouth_levels: int = 8, blink_levels: int = 4):
        from avatar.synth.head import HeadStyle

        self.view = view or ViewConfig()
        self.style = HeadStyle(spacing=spacing)
        self.pose = pose or FixedPose(procedural_camera(self.view.width, self.view.height))
        self.blinks = BlinkSchedule(fps, blink)
        self.levels = (max(1, int(mouth_levels)), max(1, int(blink_levels)))
        self._cache: dict = {}
        super().__init__(MouthEnvelope(fps, envelope), self._render, fps=fps,
                         width=self.view.width, height=self.view.height,
                         views=2 if self.view.stereo else 1, window=0, lookahead=0,
                         backdrop=backdrop or Backdrop("color", (1.0, 1.0, 1.0)))

    def expression(self, t: int, mouth_open: float) -> Tuple[float, float]:
        """(mouth_open, blink) actually rendered for frame t (quantised when caching)."""
        m = min(1.0, max(0.0, float(mouth_open)))
        b = self.blinks(t)
        if isinstance(self.pose, FixedPose):
            lm, lb = self.levels
            m = round(m * lm) / lm
            b = round(b * lb) / lb
        return m, b

    def gaussians(self, mouth_open: float, blink: float) -> dict:
        """The head's Gaussians for one expression (torch tensors, see avatar.synth.head)."""
        from avatar.synth.head import procedural_head

        return procedural_head(min(1.0, max(0.0, mouth_open)), min(1.0, max(0.0, blink)), self.style)

    def _render_one(self, t: int, m: float, b: float):
        import torch

        from avatar.ops import rasterize

        g = self.gaussians(m, b)
        V, K = cameras_for(self.pose, t, self.view)
        c, a, _ = rasterize(g["means"], g["quats"], g["scales"], g["opacities"], g["colors"],
                            torch.from_numpy(V), torch.from_numpy(K), self.view.width,
                            self.view.height, backend=self.view.backend)
        return c.numpy(), a.numpy()  # [C, H, W, 3], [C, H, W, 1]

    def _render(self, idx: List[int], wins: np.ndarray):
        import torch

        cols, alps = [], []
        with torch.no_grad():
            for t, w in zip(idx, wins):
                m, b = self.expression(t, float(w[0, 0]))
                if isinstance(self.pose, FixedPose):
                    if (m, b) not in self._cache:
                        self._cache[(m, b)] = self._render_one(t, m, b)
                    c, a = self._cache[(m, b)]
                else:
                    c, a = self._render_one(t, m, b)
                cols.append(c)
                alps.append(a)
        return np.stack(cols), np.stack(alps)


# ----------------------------------------------------------------------------- trained avatar
@dataclass
class LoadedAvatar:
    """An AvatarModel with what the checkpoint says about how it was captured."""

    model: Any  # avatar.model.avatar.AvatarModel (eval mode)
    meta: dict
    path: str

    @property
    def fps(self) -> float:
        """Training video frame rate (checkpoint meta "fps"; 25 when absent)."""
        return float(self.meta.get("fps", 25.0))

    def camera(self) -> Camera:
        """Default camera: the checkpoint's reference camera (meta "viewmat", "K", "width", "height"),
        else a frontal camera 0.6 m from the head."""
        m = self.meta
        if "viewmat" in m and "K" in m:
            w, h = int(m.get("width", 256)), int(m.get("height", 256))
            return Camera(np.asarray(m["viewmat"], np.float32).reshape(4, 4),
                          np.asarray(m["K"], np.float32).reshape(3, 3), w, h)
        return frontal_camera(int(m.get("width", 256)), int(m.get("height", 256)), distance=0.6)


def apply_capture_defaults(avatar: LoadedAvatar, ds) -> LoadedAvatar:
    """Fill what the checkpoint's meta lacks (fps, reference camera) from its loaded capture
    (avatar.data.Capture): fps = the capture's, camera = its first frame's."""
    m = avatar.meta
    m.setdefault("fps", float(ds.fps))
    if "viewmat" not in m or "K" not in m:
        m.update(viewmat=np.asarray(ds.viewmats[0], np.float32).tolist(),
                 K=np.asarray(ds.Ks[0], np.float32).tolist(), width=int(ds.width), height=int(ds.height))
    return avatar


def load_avatar(path, device: str = "cpu") -> LoadedAvatar:
    """Load an avatar checkpoint (torch.load weights_only=True) keeping its meta dict."""
    from avatar.model.avatar import AvatarModel

    d = AvatarModel.read_checkpoint(path, device)
    model = AvatarModel.from_checkpoint_dict(d, str(path)).to(device).eval()
    meta = d.get("meta") or {}
    return LoadedAvatar(model, dict(meta) if isinstance(meta, dict) else {}, str(path))


def audio_feature_config(model) -> Any:
    """The AudioFeatureConfig the model was trained with (checkpoint audio_config)."""
    from avatar.audio.features import AudioFeatureConfig
    from avatar.model.config import from_dict

    return from_dict(AudioFeatureConfig, dict(model.audio_config or {}), "audio_config.")


def recorded_prior(avatar: LoadedAvatar, prior=None) -> Optional[Path]:
    """The motion prior that drives `avatar`: `prior` when given, else the one recorded in the
    checkpoint by `avatar train --prior` (meta "prior"), else None (tracked-neutral motion)."""
    if prior is not None:
        return Path(prior)
    rec = avatar.meta.get("prior")
    if not rec:
        return None
    if not Path(rec).is_file():
        raise DriveError(f"{avatar.path} was trained with the motion prior {rec}, which no longer exists; "
                         "pass --prior PRIOR.pt")
    return Path(rec)


@dataclass
class MotionTracks:
    """Per-frame motion codes and blinks of a whole audio, as the motion prior predicts them.
    Frames past the end repeat the last one (a stream may run a frame longer than the audio)."""

    motion: np.ndarray  # [F, M] motion codes in the avatar's motion space
    blink: np.ndarray  # [F] in [0, 1]

    def motion_at(self, t: int) -> np.ndarray:
        return self.motion[min(max(int(t), 0), len(self.motion) - 1)]

    def blink_at(self, t: int) -> float:
        return float(self.blink[min(max(int(t), 0), len(self.blink) - 1)])


def prior_motion(avatar: LoadedAvatar, wav: np.ndarray, fps: float, prior_path, style=None) -> MotionTracks:
    """Motion codes and blinks for `wav` from the motion prior (avatar.prior.api.predict_prior, the one
    inference path), checked against the avatar's motion space. style: (ref_audio_feats, ref_motion)
    of the person (avatar.prior.api.style_from_capture) or None (the prior's stored reference)."""
    from avatar.prior.api import predict_prior

    pred = predict_prior(prior_path, wav, fps, num_frames(len(wav), fps), style=style,
                         motion_space=avatar.model.motion_space, source=str(avatar.path))
    return MotionTracks(pred["motion"], pred["blink"])


class AvatarSource(StreamingSource):
    """FrameSource over a trained AvatarModel: per-frame log-mel features (streamed, identical to the
    offline features), audio windows of ±k frames, the model's audio encoder (causal look-ahead when
    the model was trained causal; otherwise the full k frames of look-ahead), deformation, render.
    Blinks come from a BlinkSchedule (or `blink_fn(t)`), head pose from a PoseSource; motion codes
    are None (the model's neutral) unless `motion_fn(t) -> [M]` is given (e.g. from the motion
    prior, see `avatar.prior.api.predict_prior`)."""

    def __init__(self, avatar: "LoadedAvatar", view: Optional[ViewConfig] = None, *,
                 fps: Optional[float] = None, pose: Optional[PoseSource] = None,
                 backdrop: Optional[Backdrop] = None, blink: Optional[BlinkConfig] = None,
                 streaming: bool = True, batch: int = 1,
                 motion_fn: Optional[Callable[[int], np.ndarray]] = None,
                 blink_fn: Optional[Callable[[int], float]] = None):
        self.avatar = avatar
        self.model = avatar.model
        self.view = view or ViewConfig()
        fps = float(fps or avatar.fps)
        cfg = audio_feature_config(self.model)
        if cfg.kind == "mel":
            cond: Conditioner = StreamingMelFeatures(fps, cfg)
        elif not streaming:
            cond = WholeAudioFeatures(fps, cfg)
        else:
            raise DriveError(f"{avatar.path}: audio features kind={cfg.kind!r} cannot be streamed "
                             "(only 'mel' can); use `avatar drive` for offline rendering")
        a = self.model.cfg.audio
        k = int(a.window)
        lookahead = min(k, max(0, int(a.lookahead))) if a.causal else k
        self.pose = pose or FixedPose(avatar.camera())
        self.blinks = blink_fn or BlinkSchedule(fps, blink)
        self.motion_fn = motion_fn
        super().__init__(cond, self._render, fps=fps, width=self.view.width, height=self.view.height,
                         views=2 if self.view.stereo else 1, window=k, lookahead=lookahead,
                         backdrop=backdrop or Backdrop("color", (1.0, 1.0, 1.0)), batch=batch)

    def _render(self, idx: List[int], wins: np.ndarray):
        import torch

        dev = self.model.gaussians.means.device
        with torch.no_grad():
            z = self.model.encode_audio(torch.from_numpy(np.ascontiguousarray(wins, np.float32)).to(dev))  # [B, A]
            cols, alps = [], []
            for b, t in enumerate(idx):
                V, K = cameras_for(self.pose, t, self.view)
                motion = None if self.motion_fn is None else torch.as_tensor(self.motion_fn(t))
                c, a = self.model.render_frame(torch.from_numpy(V), torch.from_numpy(K), self.view.width,
                                               self.view.height, motion=motion, blink=self.blinks(t),
                                               background=None, audio_latent=z[b], backend=self.view.backend)
                cols.append(c)
                alps.append(a)
        return torch.stack(cols), torch.stack(alps)


class GaussianFrames:
    """Posed Gaussians of an avatar per video frame of some audio (numpy dicts): the same audio
    features, motion prior and blinks as `AvatarSource` (what `avatar drive` plays), without rendering."""

    def __init__(self, ckpt: str, fps: Optional[float] = None, prior=None):
        self.prior = prior
        self.procedural = ckpt == "procedural"
        if self.procedural:
            self.fps = float(fps or 25.0)
        else:
            from avatar.runtime.sources import load_avatar

            self.avatar = load_avatar(Path(ckpt))
            self.model = self.avatar.model
            self.fps = float(fps or self.avatar.fps)

    def num_frames(self, wav: np.ndarray) -> int:
        from avatar.audio.timeline import num_frames

        return num_frames(len(wav), self.fps)

    def canonical(self) -> Dict[str, np.ndarray]:
        if self.procedural:
            from avatar.synth.head import procedural_head

            return _numpy_gaussians(procedural_head(0.0, 0.0))
        import torch

        with torch.no_grad():
            return _numpy_gaussians(self.model.deformed(use_deform=False))

    def frames(self, wav: np.ndarray, only: Optional[int] = None) -> Iterator[Tuple[int, Dict[str, np.ndarray]]]:
        """(t, Gaussians) for every frame of the audio (or just frame `only`)."""
        from avatar.audio.stream import MouthEnvelope
        from avatar.audio.timeline import num_frames
        from avatar.runtime.blink import BlinkSchedule

        n = num_frames(len(wav), self.fps)
        blinks = BlinkSchedule(self.fps)
        if self.procedural:
            from avatar.synth.head import procedural_head

            env = MouthEnvelope(self.fps)
            rows = env.push(wav) + env.finish()
            for t in range(n):
                b = blinks(t)
                if only is None or t == only:
                    yield t, _numpy_gaussians(procedural_head(float(rows[t][0]), b))
            return
        import torch

        from avatar.audio.features import feature_windows, frame_features
        from avatar.runtime.sources import audio_feature_config

        prior = recorded_prior(self.avatar, self.prior)
        tracks = prior_motion(self.avatar, wav, self.fps, prior) if prior is not None else None
        feats = frame_features(wav, self.fps, n, audio_feature_config(self.model))  # [F, D]
        wins = feature_windows(feats, self.model.window)  # [F, 2k+1, D]
        with torch.no_grad():
            for t in range(n):
                b = blinks(t) if tracks is None else tracks.blink_at(t)
                if only is not None and t != only:
                    continue
                z = self.model.encode_audio(wins[t])
                motion = None if tracks is None else torch.as_tensor(tracks.motion_at(t))
                yield t, _numpy_gaussians(self.model.deformed(z, motion, torch.tensor(float(b))))


def _numpy_gaussians(g) -> Dict[str, np.ndarray]:
    keys = ("means", "quats", "scales", "opacities", "colors")
    return {k: np.asarray(g[k].detach().cpu().numpy() if hasattr(g[k], "detach") else g[k], np.float32) for k in keys}
