"""Training/evaluation data of the motion prior: one `PriorClip` per person (or recording).

    clip_from_capture(dir, audio_cfg)     a capture folder (avatar.data.load_capture): its audio,
                                          tracks "motion", "blink", "head_pose"
    clip_from_synth(dir, audio_cfg)       an `avatar synth` identity folder (audio.wav +
                                          ground_truth.npz landmarks3d through MotionSpace.encode)
    synthetic_identity(seed, ...)         procedural speech-like audio and motion codes with a known
                                          per-identity speaking style (in-test data and the bench's
                                          fallback; no files)
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from avatar.audio.timeline import SAMPLE_RATE


@dataclass
class PriorClip:
    """One person's aligned sequences at `fps` (F frames)."""

    name: str
    feats: torch.Tensor    # [F, Da] clip-normalised log-mel (audio_clip_features)
    pitch: torch.Tensor    # [F, 4] prosody: log-F0, voicing, log-energy, voice activity (audio_clip_features)
    motion: torch.Tensor   # [F, M] motion codes
    blink: torch.Tensor    # [F] in [0, 1]
    pose: torch.Tensor     # [F, 6] rotation vector + translation relative to the clip's mean pose
    fps: float
    info: Dict[str, Any] = field(default_factory=dict)
    opening: Optional[torch.Tensor] = None   # [F] mouth opening (inner-lip gap / inter-ocular), when known

    @property
    def num_frames(self) -> int:
        return int(self.feats.shape[0])

    def check(self) -> "PriorClip":
        f = self.num_frames
        for name, t, tail in (("pitch", self.pitch, None), ("motion", self.motion, None), ("blink", self.blink, ()),
                              ("pose", self.pose, (6,))) + ((("opening", self.opening, ()),) if self.opening is not None else ()):
            if t.shape[0] != f or (tail is not None and tuple(t.shape[1:]) != tail):
                raise ValueError(f"{self.name}: {name} has shape {tuple(t.shape)}, expected [{f}, ...] matching "
                                 f"the {f} audio-feature frames")
            if not torch.isfinite(t).all():
                raise ValueError(f"{self.name}: {name} contains NaN/inf")
        if self.motion.ndim != 2:
            raise ValueError(f"{self.name}: motion must be [F, M], got {tuple(self.motion.shape)}")
        return self

    def slice(self, a: int, b: int, name: Optional[str] = None) -> "PriorClip":
        return PriorClip(name or f"{self.name}[{a}:{b}]", self.feats[a:b], self.pitch[a:b], self.motion[a:b],
                         self.blink[a:b], self.pose[a:b], self.fps, dict(self.info),
                         None if self.opening is None else self.opening[a:b])


# ---------------------------------------------------------------------------------------------
def pose_channels(head_pose: np.ndarray) -> np.ndarray:
    """head_pose [F, 4, 4] (camera-to-head) -> [F, 6]: rotation vector of R_mean^T R_t and
    translation minus its mean, i.e. head motion relative to the clip's average pose."""
    from scipy.spatial.transform import Rotation

    hp = np.asarray(head_pose, np.float64)
    if hp.ndim != 3 or hp.shape[1:] != (4, 4):
        raise ValueError(f"head_pose must be [F, 4, 4], got {hp.shape}")
    rot = Rotation.from_matrix(hp[:, :3, :3])
    mean = rot.mean()
    rv = (mean.inv() * rot).as_rotvec()
    tr = hp[:, :3, 3] - hp[:, :3, 3].mean(0)
    return np.concatenate([rv, tr], 1).astype(np.float32)


def normalise_clip_features(mel: torch.Tensor, pitch: torch.Tensor, vad: torch.Tensor
                            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-clip normalisation (robust to loudness, microphone and speaker): log-mel bands and
    log-energy z-scored over the clip, log-F0 centred on the clip's voiced frames (speaker pitch
    removed, in octaves), voicing and voice activity as they are. -> (feats [F, Da], prosody [F, 4])."""
    mel = mel.float()
    m = (mel - mel.mean(0)) / mel.std(0, unbiased=False).clamp_min(1e-3)
    f0, voicing, energy = pitch[:, 0], pitch[:, 1], pitch[:, 2]
    voiced = voicing > 0.3
    f0c = torch.where(voiced, f0 - (f0[voiced].mean() if voiced.any() else 0.0), torch.zeros_like(f0))
    e = (energy - energy.mean()) / energy.std(unbiased=False).clamp_min(1e-3)
    return m, torch.stack([f0c, voicing, e, vad.float()], 1).float()


def audio_clip_features(wav: np.ndarray, fps: float, num_frames: int, audio_cfg,
                        vad_backend: str = "auto") -> Tuple[torch.Tensor, torch.Tensor]:
    """(feats [F, Da], prosody [F, 4]) of 16 kHz mono audio for F video frames: the log-mel of
    avatar.audio.features.frame_features and frame_pitch + avatar.audio.vad.voice_activity, normalised
    over the clip (normalise_clip_features). The prior's one feature function (train and inference)."""
    from avatar.audio.features import frame_features
    from avatar.audio.vad import voice_activity
    from avatar.prior.model import frame_pitch

    wav = np.asarray(wav, np.float32)
    mel = frame_features(wav, fps, num_frames, audio_cfg)
    pitch = frame_pitch(wav, fps, num_frames)
    vad = torch.from_numpy(np.asarray(voice_activity(wav, fps, num_frames, vad_backend).prob, np.float32))
    return normalise_clip_features(mel, pitch, vad)


def landmark_opening(lm2d: np.ndarray) -> np.ndarray:
    """[F] mouth opening of 2D landmarks [F, 478, 2]: inner-lip gap (13-14) / inter-ocular (33-263)."""
    from avatar.eval.landmarks import mouth_opening

    return np.asarray(mouth_opening(lm2d), np.float32)


def clip_from_capture(path, audio_cfg, split: Optional[str] = None) -> Tuple[PriorClip, Dict[str, Any]]:
    """A capture folder -> (PriorClip, motion-space definition dict). Multi-view folders use the
    first camera's frames (one per time). split "train": only the longest contiguous run of the
    capture's training frames (personal fine-tuning must not see the held-out test frames); None: all."""
    from avatar.data import DatasetError, load_capture

    ds = load_capture(path)
    if not ds.has_audio:
        raise DatasetError("the motion prior needs audio; this capture has none (captured with --allow-no-audio)",
                           Path(path) / "audio.wav", "audio")
    if ds.motion_space is None:
        raise DatasetError('no "avatar.motion_space" definition; re-run the tracking stage',
                           Path(path) / "transforms.json", "tracking")
    times = ds.frame_times
    _, first = np.unique(times, return_index=True)        # one frame per time (first camera)
    first = np.sort(first)
    if split is not None:
        first = _longest_run(first, np.asarray(ds.split[split], np.int64))
        if len(first) == 0:
            raise DatasetError(f'the capture\'s "{split}" split has no frames', Path(path) / "transforms.json", "split")
    t = times[first]
    tr = ds.tracks
    for k in ("motion", "blink", "head_pose"):
        if k not in tr:
            raise DatasetError(f'tracks.npz has no "{k}"', Path(path) / "tracks.npz", "tracking")
    wav = ds.audio
    n_all = int(t.max()) + 1
    feats, pitch = audio_clip_features(wav, ds.fps, n_all, audio_cfg)
    opening = None
    if "landmarks2d" in tr:
        opening = torch.from_numpy(landmark_opening(np.asarray(tr["landmarks2d"][first], np.float32)))
    clip = PriorClip(Path(path).name, feats[t], pitch[t], torch.from_numpy(np.asarray(tr["motion"][first], np.float32)),
                     torch.from_numpy(np.asarray(tr["blink"][first], np.float32)),
                     torch.from_numpy(pose_channels(tr["head_pose"][first])), ds.fps,
                     {"source": "capture", "path": str(path), "dropped_frames": int(n_all - len(t))}, opening)
    return clip.check(), ds.motion_space.to_dict()


def _longest_run(rows: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The longest run of consecutive entries of `rows` that are all in `keep`."""
    ok = np.isin(rows, keep)
    best, start = (0, 0), None
    for i, v in enumerate(np.append(ok, False)):
        if v and start is None:
            start = i
        elif not v and start is not None:
            best = max(best, (i - start, start))
            start = None
    n, a = best
    return rows[a:a + n]


def clip_from_synth(path, audio_cfg, fps: Optional[float] = None) -> Tuple[PriorClip, Dict[str, Any]]:
    """An `avatar synth` identity folder (audio.wav + ground_truth.npz) -> (PriorClip, motion-space dict).
    Motion codes come from the ground-truth landmarks3d through the default MotionSpace (neutral
    estimated from the clip, as capture does), so no capture run is needed."""
    from avatar.data.motion import MotionSpace
    from avatar.media.audio import load_audio

    path = Path(path)
    gt_path = path / "ground_truth.npz"
    if not gt_path.is_file():
        raise FileNotFoundError(f"{gt_path}: missing (made by `avatar synth`)")
    gt = np.load(gt_path, allow_pickle=False)
    if "landmarks3d" not in gt:
        raise ValueError(f"{gt_path}: no 'landmarks3d' array (keys: {sorted(gt.files)})")
    lm = gt["landmarks3d"]
    f = lm.shape[0]
    if fps is None:
        fps = float(gt["fps"]) if "fps" in gt else None
    if fps is None:
        raise ValueError(f"{gt_path}: no 'fps' array; pass fps")
    wav_path = next((p for p in (path / "audio.wav", path / "video.mp4") if p.is_file()), None)
    if wav_path is None:
        raise FileNotFoundError(f"{path}: neither audio.wav nor video.mp4 (made by `avatar synth`)")
    wav = load_audio(wav_path)
    ms = MotionSpace()
    neutral = ms.estimate_neutral(lm, gt["mouth_open"] if "mouth_open" in gt else None,
                                  gt["blink"] if "blink" in gt else None)
    motion = ms.encode(lm, neutral)
    blink = np.asarray(gt["blink"], np.float32) if "blink" in gt else np.zeros(f, np.float32)
    if "head_pose" in gt and gt["head_pose"].shape == (f, 4, 4):
        pose = pose_channels(gt["head_pose"])
    else:
        pose = np.zeros((f, 6), np.float32)
    feats, pitch = audio_clip_features(wav, fps, f, audio_cfg)
    info: Dict[str, Any] = {"source": "synth_ground_truth", "path": str(path)}
    for k in gt.files:
        if k.startswith("style") and gt[k].size < 64:
            info[k] = gt[k].tolist()
    clip = PriorClip(path.name, feats, pitch, torch.from_numpy(motion), torch.from_numpy(blink),
                     torch.from_numpy(pose), fps, info)
    return clip.check(), ms.to_dict()


def load_clip(path, audio_cfg, split: Optional[str] = None) -> Tuple[PriorClip, Dict[str, Any]]:
    """A capture folder (transforms.json; `split` as clip_from_capture) or, failing that, a synth
    identity folder (ground_truth.npz)."""
    p = Path(path)
    if (p / "transforms.json").is_file():
        return clip_from_capture(p, audio_cfg, split)
    if (p / "ground_truth.npz").is_file():
        return clip_from_synth(p, audio_cfg)
    raise FileNotFoundError(f"{p}: neither a capture folder (transforms.json, from `avatar capture`) nor a synth "
                            "identity folder (ground_truth.npz, from `avatar synth`)")


# ---------------------------------------------------------------------------------------------
# procedural identities (no files): speech-like audio and motion codes with a known style
# ---------------------------------------------------------------------------------------------
SYNTH_MOTION_SPACE = {"kind": "procedural", "version": 1,
                      "about": "avatar.prior.data.synthetic_identity: fixed random bases for open/spread/round/asym"}


@dataclass
class SynthStyle:
    """Known per-identity speaking style (and voice)."""

    gain: float        # mouth-opening amplitude
    spread: float      # lip-spreading amplitude (i, e)
    round: float       # lip-rounding amplitude (o, u)
    asym: float        # left-right asymmetry as a fraction of the opening
    smooth_s: float    # coarticulation smoothing (time constant, s)
    rate: float        # syllables per second
    f0: float          # base pitch, Hz (voice; not predictive of the style)
    tract: float       # formant scale (vocal-tract length; voice, not style)


def random_style(rng: np.random.Generator) -> SynthStyle:
    return SynthStyle(gain=float(rng.uniform(0.6, 1.4)), spread=float(rng.uniform(0.6, 1.4)),
                      round=float(rng.uniform(0.6, 1.4)), asym=float(rng.uniform(-0.3, 0.3)),
                      smooth_s=float(rng.uniform(0.03, 0.08)), rate=float(rng.uniform(3.0, 5.0)),
                      f0=float(rng.uniform(95, 240)), tract=float(rng.uniform(0.85, 1.15)))


# vowels: (F1, F2) Hz and mouth targets (open, spread, round)
_VOWELS = np.array([
    # F1    F2    open spread round
    [280, 2250, 0.30, 1.00, 0.00],   # i
    [400, 2000, 0.50, 0.70, 0.00],   # e
    [550, 1800, 0.70, 0.40, 0.00],   # E
    [750, 1250, 1.00, 0.10, 0.00],   # a
    [600, 900, 0.80, 0.00, 0.50],    # O
    [420, 800, 0.50, 0.00, 0.80],    # o
    [300, 750, 0.25, 0.00, 1.00],    # u
    [500, 1450, 0.45, 0.10, 0.10],   # schwa
])
# consonants: kind, mouth targets (open, spread, round, press, tuck)
_CONSONANTS = [("bilabial_nasal", (0.0, 0.0, 0.0, 1.0, 0.0)), ("bilabial_stop", (0.0, 0.0, 0.0, 1.0, 0.0)),
               ("labiodental", (0.15, 0.0, 0.0, 0.0, 1.0)), ("alveolar_fric", (0.15, 0.5, 0.0, 0.0, 0.0)),
               ("alveolar_stop", (0.25, 0.2, 0.0, 0.0, 0.0)), ("velar_stop", (0.35, 0.0, 0.0, 0.0, 0.0)),
               ("none", None)]
_N_BASES = 6  # open, spread, round, asym, press, tuck


def _bases(motion_dim: int) -> np.ndarray:
    """[6, M] fixed person-agnostic orthonormal directions: open, spread, round, asymmetry, press, tuck."""
    g = np.random.default_rng(12345)
    q, _ = np.linalg.qr(g.normal(size=(motion_dim, _N_BASES)))
    return q.T.astype(np.float64)


def _band_noise(rng, n: int, lo: float, hi: float, sr: int) -> np.ndarray:
    spec = np.fft.rfft(rng.normal(size=n))
    f = np.fft.rfftfreq(n, 1 / sr)
    spec[(f < lo) | (f > hi)] = 0
    x = np.fft.irfft(spec, n)
    return x / (x.std() + 1e-9)


def synthetic_identity(seed: int, seconds: float = 20.0, fps: float = 25.0, motion_dim: int = 24,
                       style: Optional[SynthStyle] = None, sr: int = SAMPLE_RATE
                       ) -> Tuple[np.ndarray, Dict[str, np.ndarray], SynthStyle]:
    """Speech-like audio and its ground truth, with a known per-identity style.

    Audio: (C)V syllables at the identity's rate; vowels are harmonics of a gliding F0 shaped by two
    formants (scaled by the identity's vocal-tract factor), consonants are a bilabial/nasal hum, stop
    bursts and fricative noise bands; pauses are silence (room noise at -80 dBFS).
    Motion codes [F, M]: per-phone mouth targets (open/spread/round/press/tuck, open scaled by
    loudness) times the identity's gains, plus asymmetry = asym * opening, coarticulated by a
    causal smoother with the identity's time constant, lips leading the sound by one frame
    (within the prior's look-ahead). Blink [F] random (audio-independent); pose [F, 6] slow drift +
    small nods with the opening. Returns (wav [S] float32, {"motion", "blink", "pose", "open"}, style)."""
    rng = np.random.default_rng(seed)
    st = style or random_style(rng)
    n = int(round(seconds * sr))
    f_frames = int(np.floor(seconds * fps))
    amp = np.zeros(n)                 # voiced amplitude
    formant = np.tile(_VOWELS[7, :2], (n, 1)).astype(float)
    hum = np.zeros(n)                 # nasal murmur amplitude
    fric_hi = np.zeros(n)             # s-like noise amplitude
    fric_lo = np.zeros(n)             # f-like / burst noise amplitude
    targets = np.zeros((n, 5))        # open, spread, round, press, tuck (sample rate, 0 = rest)
    t = rng.uniform(0.0, 0.3)
    while t < seconds:
        if rng.random() < 0.1:                                    # pause
            t += rng.uniform(0.3, 0.9)
            continue
        dur = rng.uniform(0.7, 1.3) / st.rate
        loud = rng.uniform(0.5, 1.0)
        ckind, ctarget = _CONSONANTS[rng.integers(len(_CONSONANTS))]
        v = _VOWELS[rng.integers(len(_VOWELS))]
        a = int(t * sr)
        cdur = 0.0 if ctarget is None else min(0.35 * dur, rng.uniform(0.05, 0.09))
        c_end = min(n, int((t + cdur) * sr))
        v_end = min(n, int((t + dur) * sr))
        if c_end > a:
            targets[a:c_end] = ctarget
            m = c_end - a
            if ckind == "bilabial_nasal":
                hum[a:c_end] = 0.4 * loud
            elif ckind.endswith("stop"):
                burst = max(1, m // 4)
                fric_lo[c_end - burst:c_end] = 0.6 * loud
            elif ckind == "labiodental":
                fric_lo[a:c_end] = 0.25 * loud
            else:
                fric_hi[a:c_end] = 0.35 * loud
        if v_end > c_end:
            m = v_end - c_end
            env = np.sin(np.linspace(0, np.pi, m)) ** 0.7
            amp[c_end:v_end] = loud * env
            formant[c_end:v_end] = v[:2] * st.tract
            targets[c_end:v_end] = [v[2] * (0.7 + 0.3 * loud), v[3], v[4], 0.0, 0.0]
            targets[c_end:v_end] *= np.minimum(1.0, 4 * env)[:, None]
        t += dur + rng.uniform(0.0, 0.06)
    # --- audio
    ts = np.arange(n) / sr
    f0 = st.f0 * (1 + 0.1 * np.sin(2 * np.pi * 0.6 * ts + rng.uniform(0, 6)) + 0.05 * amp)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    wav = np.zeros(n)
    f3 = 2600 * st.tract
    for k in range(1, 31):
        fk = k * f0
        g = (np.exp(-0.5 * ((fk - formant[:, 0]) / 90.0) ** 2) + 0.6 * np.exp(-0.5 * ((fk - formant[:, 1]) / 120.0) ** 2)
             + 0.2 * np.exp(-0.5 * ((fk - f3) / 150.0) ** 2) + 0.02)
        wav += amp * g / np.sqrt(k) * np.sin(k * phase)
        if k <= 3:
            wav += hum * np.exp(-0.5 * ((fk - 250.0) / 80.0) ** 2) * np.sin(k * phase)
    wav += 0.15 * fric_hi * _band_noise(rng, n, 4000, 7900, sr) + 0.15 * fric_lo * _band_noise(rng, n, 800, 7900, sr)
    wav = wav / (np.abs(wav).max() + 1e-9) * 0.5
    wav += 1e-4 * rng.normal(size=n)
    # --- motion at frame rate (frame t covers [t/fps, (t+1)/fps)); lips lead the sound by one frame
    edges = (np.arange(f_frames + 1) / fps * sr).astype(int).clip(0, n)
    cs = np.concatenate([np.zeros((1, 5)), np.cumsum(targets, 0)])
    tf = (cs[edges[1:]] - cs[edges[:-1]]) / np.maximum(1, edges[1:] - edges[:-1])[:, None]
    tf = np.concatenate([tf[1:], tf[-1:]], 0)
    alpha = 1 - np.exp(-1.0 / (fps * st.smooth_s))
    sm = np.zeros_like(tf)
    for i in range(f_frames):
        sm[i] = (sm[i - 1] if i else 0.0) + alpha * (tf[i] - (sm[i - 1] if i else 0.0))
    opening = st.gain * sm[:, 0]
    bases = _bases(motion_dim)
    motion = (opening[:, None] * bases[0] + st.spread * sm[:, 1:2] * bases[1] + st.round * sm[:, 2:3] * bases[2]
              + st.asym * opening[:, None] * bases[3] + sm[:, 3:4] * bases[4] + sm[:, 4:5] * bases[5])
    motion += 0.01 * rng.normal(size=motion.shape)
    blink = np.zeros(f_frames)
    tb = rng.uniform(0.5, 3.0)
    while tb < seconds:
        blink = np.maximum(blink, np.clip(1 - np.abs(np.arange(f_frames) - tb * fps) / 2.0, 0, 1))
        tb += rng.uniform(2.0, 5.0)
    pose = np.zeros((f_frames, 6))
    drift = np.cumsum(rng.normal(scale=0.002, size=(f_frames, 3)), 0)
    pose[:, :3] = drift - drift.mean(0)
    pose[:, 0] += 0.03 * sm[:, 0]
    gt = {"motion": motion.astype(np.float32), "blink": blink.astype(np.float32), "pose": pose.astype(np.float32),
          "open": opening.astype(np.float32)}
    return wav.astype(np.float32), gt, st


def synthetic_clip(seed: int, audio_cfg=None, seconds: float = 20.0, fps: float = 25.0, motion_dim: int = 24,
                   features=None) -> PriorClip:
    """synthetic_identity -> PriorClip. `features(wav, fps, F) -> [F, Da]` overrides the audio features
    (default: avatar.audio.features.frame_features with audio_cfg)."""
    from avatar.prior.model import frame_pitch

    wav, gt, st = synthetic_identity(seed, seconds, fps, motion_dim)
    f = gt["motion"].shape[0]
    if features is None:
        from avatar.audio.features import frame_features
        feats = frame_features(wav, fps, f, audio_cfg)
    else:
        feats = features(wav, fps, f)
    clip = PriorClip(f"synthetic_{seed}", feats, frame_pitch(wav, fps, f), torch.from_numpy(gt["motion"]),
                     torch.from_numpy(gt["blink"]), torch.from_numpy(gt["pose"]), fps,
                     {"source": "procedural", "seed": seed, "style": json.loads(json.dumps(st.__dict__)),
                      "open": gt["open"].tolist()})
    return clip.check()
