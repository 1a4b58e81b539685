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


def load_avatar(path, device: str = "auto") -> LoadedAvatar:
    """Load an avatar checkpoint (torch.load weights_only=True) keeping its meta dict, on `device`
    ("auto": CUDA when present, else the CPU)."""
    from avatar.model.avatar import AvatarModel
    from avatar.model.device import resolve_device

    device = resolve_device(device)[0]
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
    """The motion prior that drives `avatar`: `prior` when given ("none"/"off": no prior), else the one
    recorded in the checkpoint by `avatar train --prior` (meta "prior"), else the prior shipped inside
    the package (avatar.prior.api.default_prior) when the avatar takes motion codes in its motion
    space, else None (neutral motion, procedural blinks)."""
    from avatar.prior.api import default_prior, resolve_prior

    if prior is not None:
        return resolve_prior(prior)
    rec = avatar.meta.get("prior")
    if rec:
        if not Path(rec).is_file():
            raise DriveError(f"{avatar.path} was trained with the motion prior {rec}, which no longer exists; "
                             "pass --prior PRIOR.pt (or --prior none)")
        return Path(rec)
    shipped = default_prior()
    if shipped is None or not getattr(avatar.model.cfg, "motion_dim", 0) or not avatar.model.motion_space:
        return None
    from avatar.prior.api import load_prior

    try:
        load_prior(shipped).check_motion_space(avatar.model.motion_space)
    except ValueError:
        return None      # an avatar in another motion space: the shipped prior cannot drive it
    return shipped


@dataclass
class MotionTracks:
    """Per-frame motion codes, blinks and head motion of a whole audio, as the motion prior predicts them.
    Frames past the end repeat the last one (a stream may run a frame longer than the audio)."""

    motion: np.ndarray  # [F, M] ABSOLUTE motion codes in the avatar's motion space (person mean + deviation)
    blink: np.ndarray  # [F] in [0, 1]
    head_pose: Optional[np.ndarray] = None  # [F, 6] rotation vector + translation (m) relative to the mean pose
    opening: Optional[np.ndarray] = None  # [F] the mouth opening the codes mean (inner-lip gap / inter-ocular)
    personalised: str = ""  # how (avatar.prior.api.personal_stats)

    def motion_at(self, t: int) -> np.ndarray:
        return self.motion[min(max(int(t), 0), len(self.motion) - 1)]

    def blink_at(self, t: int) -> float:
        return float(self.blink[min(max(int(t), 0), len(self.blink) - 1)])

    def pose_at(self, t: int) -> np.ndarray:
        if self.head_pose is None or not len(self.head_pose):
            return np.zeros(6, np.float32)
        return self.head_pose[min(max(int(t), 0), len(self.head_pose) - 1)]


def person_stats(avatar: LoadedAvatar, std_scale: bool = True):
    """(motion_mean [M] or None, motion_std [M] or None) of the avatar's person from its checkpoint meta
    ("motion_mean"/"motion_std": the tracked codes over the training frames)."""
    m = avatar.meta.get("motion_mean")
    s = avatar.meta.get("motion_std") if std_scale else None
    return (None if m is None else np.asarray(m, np.float32)), (None if s is None else np.asarray(s, np.float32))


def prior_motion(avatar: LoadedAvatar, wav: np.ndarray, fps: float, prior_path, style=None,
                 std_scale: bool = True) -> MotionTracks:
    """Motion codes, blinks and head motion for `wav` from the motion prior (avatar.prior.api.predict_prior,
    the one inference path), checked against the avatar's motion space. The codes are ABSOLUTE for this
    avatar: its person's mean (meta "motion_mean"; the prior's pooled mean when absent) + the predicted
    deviation, scaled per code to the person's std (meta "motion_std") when std_scale. style:
    (ref_audio_feats or None, ref_motion) of the person (avatar.prior.api.style_from_capture): its std
    wins over the avatar's, its mean is used when the avatar has none."""
    from avatar.prior.api import predict_prior

    mean, std = person_stats(avatar, std_scale)
    pred = predict_prior(prior_path, wav, fps, num_frames(len(wav), fps), style=style,
                         motion_space=avatar.model.motion_space, source=str(avatar.path),
                         person_mean=mean, person_std=std)
    return MotionTracks(pred["motion"], pred["blink"], pred["head_pose"], pred["opening"], pred["personalised"])


def _rotvec_to_matrix(rv: np.ndarray) -> np.ndarray:
    rv = np.asarray(rv, np.float64)
    th = float(np.linalg.norm(rv))
    if th < 1e-12:
        return np.eye(3)
    k = rv / th
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * K @ K


def head_motion_viewmat(viewmat: np.ndarray, pose6: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """The reference (neutral) camera's world(head)-to-camera `viewmat` [4, 4] moved by the head motion
    pose6 = (rotation vector, translation) relative to the mean pose (avatar.prior.data.pose_channels:
    camera-to-head R_t = R_ref E with E = exp(rv)), blended with the neutral pose by `scale` (0: the
    neutral camera, 1: the predicted motion, > 1 exaggerated). The head turns about its own centre: the
    camera orbits it, t_t = R_ref E R_ref^T t_ref (+ tr), so the head's origin stays where it was in the
    image (the prior's translation is zero: avatar.prior.pose)."""
    V = np.asarray(viewmat, np.float64).reshape(4, 4)
    c2h = np.linalg.inv(V)
    p = np.asarray(pose6, np.float64) * float(scale)
    R = c2h[:3, :3]
    turn = R @ _rotvec_to_matrix(p[:3]) @ R.T                    # the same rotation, in head coordinates
    out = np.eye(4)
    out[:3, :3] = turn @ R
    out[:3, 3] = turn @ c2h[:3, 3] + p[3:6]
    return np.linalg.inv(out).astype(np.float32)


class PriorPose:
    """PoseSource: the base camera moved by the prior's head motion (`tracks.pose_at(t)`, anything with
    that method: MotionTracks or LivePriorTracks), blended with the neutral pose by `scale`."""

    def __init__(self, base: Camera, tracks, scale: float = 1.0):
        self.base, self.tracks, self.scale = base, tracks, float(scale)

    def camera(self, index: int) -> Camera:
        V = head_motion_viewmat(self.base.viewmat, self.tracks.pose_at(index), self.scale)
        return Camera(V, self.base.K, self.base.width, self.base.height)


class LivePriorTracks:
    """MotionTracks for a stream (`avatar serve`, per client): the prior runs over a sliding causal window
    of the audio received so far (the last `window_s` seconds; features normalised over that window),
    after every chunk, for every frame whose audio has arrived. It adds no latency beyond the stream's
    own look-ahead (the frames the renderer waits for): a frame rendered before the prior's own
    look-ahead (MotionPriorConfig.lookahead_frames) of audio exists is predicted with the audio edge
    repeated. Cost: one prior pass over window_s seconds per chunk."""

    def __init__(self, avatar: LoadedAvatar, prior_path, fps: float, style=None, std_scale: bool = True,
                 window_s: float = 4.0):
        self.avatar, self.prior_path, self.fps, self.style = avatar, prior_path, float(fps), style
        self.std_scale, self.window_s = std_scale, float(window_s)
        self.reset()

    def reset(self) -> None:
        self._wav = np.zeros(0, np.float32)
        self._s0 = 0            # absolute sample index of self._wav[0]
        self._motion: Dict[int, np.ndarray] = {}
        self._blink: Dict[int, float] = {}
        self._pose: Dict[int, np.ndarray] = {}
        self._last = -1

    def push(self, wav: np.ndarray) -> None:
        from avatar.audio.timeline import SAMPLE_RATE

        self._wav = np.concatenate([self._wav, np.asarray(wav, np.float32).ravel()])
        total = self._s0 + len(self._wav)
        n_recv = int(total * self.fps // SAMPLE_RATE)            # frames whose audio has fully arrived
        if n_recv <= self._last + 1 and len(wav):
            return
        self._predict(n_recv if len(wav) else num_frames(total, self.fps))

    def _predict(self, n_upto: int) -> None:
        from avatar.audio.timeline import SAMPLE_RATE

        if n_upto <= 0:
            return
        f0 = max(0, n_upto - int(round(self.window_s * self.fps)))
        s0 = int(round(f0 * SAMPLE_RATE / self.fps))
        if s0 > self._s0:                                       # drop audio before the window
            self._wav = self._wav[s0 - self._s0:]
            self._s0 = s0
        f0 = int(np.ceil(self._s0 * self.fps / SAMPLE_RATE))
        off = int(round(f0 * SAMPLE_RATE / self.fps)) - self._s0
        seg = self._wav[max(0, off):]
        n = n_upto - f0
        if n <= 0 or len(seg) == 0:
            return
        from avatar.prior.api import predict_prior

        mean, std = person_stats(self.avatar, self.std_scale)
        pred = predict_prior(self.prior_path, seg, self.fps, n, style=self.style,
                             motion_space=self.avatar.model.motion_space, source=str(self.avatar.path),
                             person_mean=mean, person_std=std)
        for i in range(n):
            t = f0 + i
            self._motion[t], self._blink[t], self._pose[t] = pred["motion"][i], float(pred["blink"][i]), pred["head_pose"][i]
        self._last = max(self._last, n_upto - 1)
        for t in [k for k in self._motion if k < f0 - 8]:        # bounded memory
            del self._motion[t], self._blink[t], self._pose[t]

    def _get(self, d: dict, t: int, default):
        if not d:
            return default
        t = int(t)
        if t in d:
            return d[t]
        return d[max(d)] if t > max(d) else d[min(d)]

    def motion_at(self, t: int):
        m = self._get(self._motion, t, None)
        if m is None:
            mean, _ = person_stats(self.avatar)
            return mean if mean is not None else None
        return m

    def blink_at(self, t: int) -> float:
        return float(self._get(self._blink, t, 0.0))

    def pose_at(self, t: int) -> np.ndarray:
        return self._get(self._pose, t, np.zeros(6, np.float32))


class PriorConditioner:
    """Wraps a stream's Conditioner so each pushed chunk also feeds a LivePriorTracks (same audio, same
    frame rule); reset/finish pass through."""

    def __init__(self, inner: Conditioner, tracks: LivePriorTracks):
        self.inner, self.tracks = inner, tracks

    def reset(self) -> None:
        self.inner.reset()
        self.tracks.reset()

    def push(self, wav: np.ndarray) -> List[np.ndarray]:
        rows = self.inner.push(wav)
        self.tracks.push(wav)
        return rows

    def finish(self) -> List[np.ndarray]:
        rows = self.inner.finish()
        self.tracks.push(np.zeros(0, np.float32))
        return rows


def live_prior_source(avatar: LoadedAvatar, prior_path, view: ViewConfig, fps: Optional[float] = None,
                      pose: str = "fixed", pose_scale: float = 1.0, style=None, std_scale: bool = True,
                      **kw) -> "AvatarSource":
    """A streaming AvatarSource whose motion codes, blinks (and with pose="prior" head motion) come from
    the prior over the audio received so far (LivePriorTracks): what `avatar serve` runs per client."""
    fps = float(fps or avatar.fps)
    tracks = LivePriorTracks(avatar, prior_path, fps, style=style, std_scale=std_scale)
    posesrc = PriorPose(avatar.camera().resized(view.width, view.height), tracks, pose_scale) if pose == "prior" else None
    src = AvatarSource(avatar, view, fps=fps, pose=posesrc, streaming=True, motion_fn=tracks.motion_at,
                       blink_fn=tracks.blink_at, **kw)
    src.conditioner = PriorConditioner(src.conditioner, tracks)
    src.prior_tracks = tracks
    return src


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

    def __init__(self, ckpt: str, fps: Optional[float] = None, prior=None, pose: str = "fixed",
                 pose_scale: float = 1.0, style=None, std_scale: bool = True):
        self.prior = prior
        self.pose, self.pose_scale, self.style, self.std_scale = pose, float(pose_scale), style, std_scale
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
        tracks = (prior_motion(self.avatar, wav, self.fps, prior, style=self.style, std_scale=self.std_scale)
                  if prior is not None else None)
        if self.pose == "prior" and tracks is None:
            raise DriveError("--pose prior needs a motion prior (none is recorded, shipped or given)")
        from avatar.data.schema import LABELS

        feats = frame_features(wav, self.fps, n, audio_feature_config(self.model))  # [F, D]
        wins = feature_windows(feats, self.model.window)  # [F, 2k+1, D]
        V0 = np.asarray(self.avatar.camera().viewmat, np.float64)
        torso = (self.model.gaussians.labels == LABELS["torso"]).cpu().numpy()
        with torch.no_grad():
            for t in range(n):
                b = blinks(t) if tracks is None else tracks.blink_at(t)
                if only is not None and t != only:
                    continue
                z = self.model.encode_audio(wins[t])
                motion = None if tracks is None else torch.as_tensor(tracks.motion_at(t))
                g = _numpy_gaussians(self.model.deformed(z, motion, torch.tensor(float(b))))
                # the camera drive renders frame t with: the reference camera, moved by the head motion
                Vt = V0 if self.pose != "prior" else head_motion_viewmat(V0, tracks.pose_at(t), self.pose_scale)
                # as AvatarModel.render_frame (torso="camera"): the torso stays where the capture camera saw it
                tt = self.model.torso_transform_for(torch.as_tensor(np.asarray(Vt, np.float32)))
                if tt is not None and torso.any():
                    g = _move_gaussians(g, tt.cpu().numpy(), torso)
                if self.pose == "prior":   # the head moves as drive's camera would move (same motion)
                    g = _move_gaussians(g, np.linalg.inv(V0) @ np.asarray(Vt, np.float64))
                yield t, g


def _numpy_gaussians(g) -> Dict[str, np.ndarray]:
    keys = ("means", "quats", "scales", "opacities", "colors")
    return {k: np.asarray(g[k].detach().cpu().numpy() if hasattr(g[k], "detach") else g[k], np.float32) for k in keys}


def _move_gaussians(g: Dict[str, np.ndarray], M: np.ndarray, sel: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
    """Rigidly transform numpy Gaussians by the 4x4 M (means and rotations; wxyz quaternions); only those
    where the bool mask `sel` [N] is set when given."""
    from avatar.data.cameras import quat_mul, rotmat_to_quat

    M = np.asarray(M, np.float64)
    out = dict(g)
    means = (g["means"].astype(np.float64) @ M[:3, :3].T + M[:3, 3]).astype(np.float32)
    q = np.asarray(rotmat_to_quat(M[:3, :3]), np.float64).reshape(1, 4)
    quats = np.asarray(quat_mul(np.broadcast_to(q, g["quats"].shape), g["quats"].astype(np.float64)), np.float32)
    if sel is not None:
        sel = np.asarray(sel, bool)[:, None]
        means, quats = np.where(sel, means, g["means"]), np.where(sel, quats, g["quats"])
    out["means"], out["quats"] = means, quats
    return out
