"""`avatar synth --out DIR`: a procedural talking head with ground truth, rendered with avatar.ops.

A speech-like audio track (voiced syllables: a harmonic source with a pitch contour, vowel formants,
consonant noise bursts, syllable rate and pauses; deterministic by seed) drives the mouth of a
procedural Gaussian head (avatar.synth.head); blinks are random; the head follows a
known smooth pose trajectory. Frames are rendered with avatar.ops.rasterize on a plain background.

Output (mono, the default):
    DIR/video.mp4          H.264 yuv420p + AAC, `fps`, exactly num_frames / fps seconds of audio
    DIR/audio.wav          the same audio, 16 kHz mono 16-bit PCM
    DIR/ground_truth.npz   see below
    DIR/gt_masks/NNNNNN.png  uint8 label masks (0 background, 1 head/hair, 2 face, 3 mouth interior,
                           4 neck/torso; avatar.data.schema.LABELS), rendered (unless --no-masks)
    DIR/synth.json         settings, style, timings (for people; never needed by readers)
With --views N (N > 1) also a calibrated rig, for `avatar capture --rig`:
    DIR/cameras/transforms.json    nerfstudio: one frame per camera, file_path camXX/camXX.mp4,
                                   transform_matrix = camera-to-world (OpenGL), fl_x fl_y cx cy w h
    DIR/cameras/camXX/camXX.mp4    each camera's video (with the audio)
    DIR/cameras/camXX/ground_truth.npz   that camera's ground truth (same keys as below)
    DIR/cameras/camXX/gt_masks/          that camera's label masks
    DIR/video.mp4 and DIR/ground_truth.npz are copies of camera 0's (frontal); DIR/audio.wav is shared.
Python API: Synth(out=DIR, seconds=4, ...).run() -> list of per-clip info dicts (raises ValueError).
Measured on the 2-core dev machine (cpu rasterizer backend, ~10k Gaussians at spacing 4 mm):
about 0.1 s per frame at 64x64 and 0.2-0.35 s per frame at 256x256, all outputs included.
With --identities N: DIR/id_00 ... DIR/id_{N-1}, each a folder as above, one identity each with
its own speaking and appearance style (style_* keys).

ground_truth.npz (F frames, all float32 unless noted; per camera of the folder's video):
    fps            float64 scalar           frames per second
    width, height  int64 scalars            image size (pixels)
    K              [F, 3, 3]                intrinsics (pixels; pixel (i, j) centre at (j+0.5, i+0.5))
    head_pose      [F, 4, 4]                camera-to-head (OpenCV camera axes, head frame, metres)
    viewmats       [F, 4, 4]                head-to-camera (= inverse of head_pose; what was rendered)
    mouth_open     [F] in [0, 1]            the driver of the jaw (0 closed lips, 1 widest)
    blink          [F] in [0, 1]            1 = eyes closed
    landmarks2d    [F, 478, 2]              mediapipe-topology landmarks projected to pixels
    landmarks3d    [F, 478, 3]              the same in the head frame (pose removed), metres
    audio_rms      [F]                      RMS of the audio over each frame's interval
    head_to_world  [F, 4, 4]                the head's pose in the world (rig) frame
    camera_c2w     [4, 4]                   this camera's camera-to-world (OpenCV axes)
    camera_index   int64 scalar             index of this camera in the rig (0 for mono)
    style_*        small arrays             the identity's style: style_mouth_amplitude,
                   style_mouth_asymmetry, style_syllable_rate (Hz), style_pitch_hz,
                   style_head_scale [3], style_skin [3], style_hair [3], style_blink_interval (s)
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from avatar.audio.timeline import SAMPLE_RATE
from avatar.data.cameras import look_at
from avatar.io.atomic import atomic_path, atomic_write_json

BACKGROUND = (0.62, 0.70, 0.76)

# Vowel targets: formants F1, F2, F3 (Hz; adult averages, Peterson & Barney 1952) and how far the
# jaw opens for them (0..1).
VOWELS = {
    "a": ((730.0, 1090.0, 2440.0), 1.00),
    "o": ((570.0, 840.0, 2410.0), 0.70),
    "e": ((530.0, 1840.0, 2480.0), 0.60),
    "u": ((300.0, 870.0, 2240.0), 0.35),
    "i": ((270.0, 2290.0, 3010.0), 0.30),
}
FORMANT_BW = (90.0, 110.0, 170.0)


@dataclasses.dataclass(frozen=True)
class SpeechStyle:
    """How an identity speaks (the audio side of its style)."""

    syllable_rate: float = 4.5
    """Syllables per second while speaking."""
    pitch_hz: float = 140.0
    """Mean fundamental frequency (Hz)."""
    phrase_syllables: float = 6.0
    """Mean number of syllables between pauses."""
    blink_interval: float = 3.5
    """Mean seconds between blinks."""


# ------------------------------------------------------------------------------- speech synthesis
def _smooth(x: np.ndarray, n: int) -> np.ndarray:
    if n <= 1:
        return x
    k = np.hanning(n + 2)[1:-1]
    k /= k.sum()
    return np.convolve(np.pad(x, (n, n), mode="edge"), k, mode="same")[n:-n]


def synth_speech(seconds: float, style: SpeechStyle, rng: np.random.Generator, sr: int = SAMPLE_RATE
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Speech-like audio and its mouth-opening curve -> (wav [S] float32, mouth [S] in [0,1])."""
    S = int(round(seconds * sr))
    t = np.arange(S) / sr
    voiced = np.zeros(S)         # amplitude of the voiced source
    mouth = np.zeros(S)          # jaw opening
    noise_env = np.zeros(S)      # consonant bursts
    F = np.zeros((3, S))
    F[:] = np.array(VOWELS["e"][0])[:, None]
    accent = np.zeros(S)
    pos = float(rng.uniform(0.25, 0.5))                       # leading silence
    while pos < seconds - 0.3:
        n_syl = max(1, int(rng.poisson(style.phrase_syllables - 1) + 1))
        for _ in range(n_syl):
            dur = rng.uniform(0.75, 1.3) / style.syllable_rate
            if pos + dur > seconds - 0.15:
                break
            v = rng.choice(list(VOWELS))
            formants, opening = VOWELS[v]
            opening = float(np.clip(opening * rng.uniform(0.8, 1.1), 0.15, 1.0))
            loud = rng.uniform(0.7, 1.0)
            a, b = int(pos * sr), int((pos + dur) * sr)
            n = b - a
            c = int(n * rng.uniform(0.12, 0.3))              # consonant onset
            tau = np.linspace(0.0, 1.0, n - c)
            shape = np.sin(np.pi * tau) ** 0.8
            voiced[a + c:b] += loud * (0.35 + 0.65 * opening) * shape
            mouth[a + c:b] = np.maximum(mouth[a + c:b], opening * shape)
            if rng.random() < 0.75:                           # fricative / plosive burst
                noise_env[a:a + c] += 0.25 * loud * np.hanning(c + 2)[1:-1]
            F[:, a:b] = np.array(formants)[:, None] * rng.uniform(0.95, 1.05)
            accent[a + c:b] += rng.uniform(-0.05, 0.12) * shape
            pos += dur
        pos += rng.uniform(0.25, 0.75)                        # pause between phrases
    F = np.stack([_smooth(f, int(0.03 * sr)) for f in F])
    # pitch: declining over each second-ish, accents on syllables, slow wobble
    f0 = style.pitch_hz * (1.0 + accent + 0.04 * np.sin(2 * np.pi * 0.6 * t + rng.uniform(0, 6.3))
                           - 0.08 * ((t * 0.7) % 1.0))
    f0 = _smooth(f0, int(0.02 * sr))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    K = int(min(60, 5000.0 / style.pitch_hz))
    wav = np.zeros(S)
    for k in range(1, K + 1):
        fk = k * f0
        gain = 0.03
        for i, (g, bw) in enumerate(zip((1.0, 0.6, 0.25), FORMANT_BW)):
            gain = gain + g / (1.0 + ((fk - F[i]) / bw) ** 2)
        wav += gain / k * np.sin(k * phase) * (fk < sr / 2 - 500)
    # unit short-time RMS carrier (vowels differ a lot in raw energy), then the syllable envelopes
    wav /= np.sqrt(_smooth(wav ** 2, int(0.02 * sr))) + 1e-6
    wav *= voiced
    noise = rng.standard_normal(S + 1)
    wav += np.diff(noise) * 0.5 * noise_env               # high-passed noise for consonants
    wav += 3e-4 * rng.standard_normal(S)                  # room noise floor
    wav *= 0.6 / (np.abs(wav).max() + 1e-9)
    return wav.astype(np.float32), np.clip(mouth, 0.0, 1.0)


def per_frame_mean(x: np.ndarray, num_frames: int, fps: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Mean of a per-sample signal over each frame's interval [f/fps, (f+1)/fps) -> [F]."""
    edges = np.round(np.arange(num_frames + 1) / fps * sr).astype(int)
    edges = np.clip(edges, 0, len(x))
    c = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
    n = np.maximum(edges[1:] - edges[:-1], 1)
    return ((c[edges[1:]] - c[edges[:-1]]) / n).astype(np.float32)


def blink_track(num_frames: int, fps: float, interval: float, rng: np.random.Generator) -> np.ndarray:
    """Random blinks (close 80 ms, hold 40 ms, open 150 ms) at ~`interval` s spacing -> [F] in [0,1]."""
    t = np.arange(num_frames) / fps
    out = np.zeros(num_frames)
    start = rng.uniform(0.5, interval)
    end = num_frames / fps
    while start < end:
        rel = t - start
        close = np.clip(rel / 0.08, 0, 1)
        opened = np.clip((rel - 0.12) / 0.15, 0, 1)
        out = np.maximum(out, np.where(rel < 0, 0.0, close - opened))
        start += max(0.5, rng.exponential(interval - 0.5) + 0.5)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------------------- geometry
def _rot(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cy, sy, cp, sp, cr, sr_ = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    Rz = np.array([[cr, -sr_, 0], [sr_, cr, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def pose_trajectory(num_frames: int, fps: float, rng: np.random.Generator, amplitude_deg=(18.0, 10.0, 7.0),
                    translation_m=(0.015, 0.01, 0.01)) -> np.ndarray:
    """Smooth head-to-world poses [F, 4, 4]: yaw/pitch/roll and translation as sums of 3 slow sines
    (0.05-0.35 Hz) bounded by the given amplitudes."""
    t = np.arange(num_frames) / fps

    def wave(amp):
        w = rng.dirichlet(np.ones(3))
        f = rng.uniform(0.05, 0.35, 3)
        ph = rng.uniform(0, 2 * np.pi, 3)
        return amp * (w[:, None] * np.sin(2 * np.pi * f[:, None] * t[None] + ph[:, None])).sum(0)

    ang = [np.deg2rad(wave(a)) for a in amplitude_deg]
    tr = [wave(a) for a in translation_m]
    T = np.tile(np.eye(4), (num_frames, 1, 1))
    for i in range(num_frames):
        T[i, :3, :3] = _rot(ang[0][i], ang[1][i], ang[2][i])
        T[i, :3, 3] = [tr[0][i], tr[1][i], tr[2][i]]
    return T


def rig_cameras(views: int, width: int, height: int, distance: float = 0.6, spread_deg: float = 25.0
                ) -> Tuple[np.ndarray, np.ndarray]:
    """Camera 0 frontal, the others alternating right/left every `spread_deg` of yaw (and a little
    elevation), all at `distance` from the head looking at it -> (viewmats [C,4,4], Ks [C,3,3])."""
    target = np.array([0.0, 0.02, 0.0])
    V, K = [], []
    f = 1.65 * width * 0.6 / distance
    for c in range(views):
        k = (c + 1) // 2
        yaw = np.deg2rad(spread_deg * k * (1 if c % 2 else -1))
        elev = np.deg2rad(-6.0 * (k % 2))
        pos = target + distance * np.array([np.sin(yaw) * np.cos(elev), np.sin(elev), -np.cos(yaw) * np.cos(elev)])
        V.append(look_at(pos, target))
        K.append([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])
    return np.array(V), np.array(K, float)


def project(points: np.ndarray, viewmats: np.ndarray, K: np.ndarray) -> np.ndarray:
    """points [..., P, 3] head frame, viewmats [..., 4, 4], K [..., 3, 3] -> pixels [..., P, 2]."""
    cam = points @ np.swapaxes(viewmats[..., :3, :3], -1, -2) + viewmats[..., None, :3, 3]
    uv = cam @ np.swapaxes(K, -1, -2)
    return uv[..., :2] / uv[..., 2:3]


# ------------------------------------------------------------------------------------ identities
SKINS = [(0.93, 0.77, 0.66), (0.87, 0.67, 0.55), (0.76, 0.57, 0.43), (0.58, 0.41, 0.30), (0.42, 0.29, 0.21)]
HAIRS = [(0.07, 0.05, 0.04), (0.20, 0.13, 0.09), (0.42, 0.28, 0.14), (0.72, 0.57, 0.33), (0.55, 0.53, 0.52)]
IRISES = [(0.30, 0.20, 0.12), (0.25, 0.40, 0.55), (0.30, 0.42, 0.28), (0.15, 0.10, 0.07)]
SHIRTS = [(0.18, 0.28, 0.50), (0.55, 0.18, 0.20), (0.22, 0.45, 0.30), (0.30, 0.30, 0.32), (0.85, 0.85, 0.82)]


def sample_identity(rng: np.random.Generator, spacing: float):
    """A random, distinct appearance + speaking style -> (HeadStyle, SpeechStyle)."""
    from avatar.synth.head import HeadStyle

    def pick(pal):
        base = np.array(pal[rng.integers(len(pal))])
        return tuple(float(v) for v in np.clip(base * rng.uniform(0.93, 1.07, 3), 0, 1))

    head = HeadStyle(
        skin=pick(SKINS), hair=pick(HAIRS), iris=pick(IRISES), shirt=pick(SHIRTS),
        lips=tuple(float(v) for v in np.clip(np.array(pick(SKINS)) * [0.85, 0.5, 0.52], 0, 1)),
        head_scale=tuple(float(v) for v in rng.uniform(0.92, 1.08, 3)),
        mouth_amplitude=float(rng.uniform(0.6, 1.4)),
        mouth_asymmetry=float(rng.uniform(-0.4, 0.4)),
        spacing=spacing)
    speech = SpeechStyle(syllable_rate=float(rng.uniform(3.0, 6.0)), pitch_hz=float(rng.uniform(95.0, 230.0)),
                         phrase_syllables=float(rng.uniform(4.0, 9.0)),
                         blink_interval=float(rng.uniform(2.5, 5.5)))
    return head, speech


def style_arrays(head, speech: SpeechStyle) -> Dict[str, np.ndarray]:
    return {
        "style_mouth_amplitude": np.float32(head.mouth_amplitude),
        "style_mouth_asymmetry": np.float32(head.mouth_asymmetry),
        "style_syllable_rate": np.float32(speech.syllable_rate),
        "style_pitch_hz": np.float32(speech.pitch_hz),
        "style_phrase_syllables": np.float32(speech.phrase_syllables),
        "style_blink_interval": np.float32(speech.blink_interval),
        "style_head_scale": np.array(head.head_scale, np.float32),
        "style_skin": np.array(head.skin, np.float32),
        "style_hair": np.array(head.hair, np.float32),
    }


# ---------------------------------------------------------------------------------- the command
def _save_npz(path: Path, arrays: Dict[str, np.ndarray]) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


@dataclasses.dataclass
class SynthConfig:
    """What `avatar synth` makes, and `run()` that makes it: render a procedural talking head with speech-like audio and ground truth (poses, landmarks,
    mouth opening, blinks, masks) for tests, demos and the motion prior."""

    out: Path
    """Output folder (created; must be empty or absent unless --overwrite)."""
    seconds: float = 10.0
    """Clip length in seconds."""
    fps: float = 25.0
    """Frames per second."""
    width: int = 256
    """Image width in pixels (even)."""
    height: int = 256
    """Image height in pixels (even)."""
    views: int = 1
    """Number of cameras: 1 = mono; N > 1 adds a calibrated rig (camera 0 frontal, then ±25° yaw steps)."""
    identities: int = 0
    """0: one clip of the default head in OUT; N >= 1: N identities with distinct random styles in
    OUT/id_00 ... (the prior's training data)."""
    seed: int = 0
    """Random seed: audio, blinks, pose trajectory and identity styles are functions of it."""
    pose_scale: float = 1.0
    """Scale of the head motion (1: yaw ±18°, pitch ±10°, roll ±7°, ±1.5 cm; 0: still head)."""
    spacing: float = 0.004
    """Distance between neighbouring Gaussians of the head surface (metres): detail vs speed."""
    masks: bool = True
    """Write per-frame label masks to gt_masks/ (rendered in the same pass, cheap)."""
    backend: str = "auto"
    """avatar.ops.rasterize backend: auto | cuda | gsplat | cpu | torch."""
    crf: int = 18
    """H.264 quality (lower = better, bigger)."""
    overwrite: bool = False
    """Replace the contents of a non-empty output folder."""

    def _check(self) -> None:
        if self.seconds <= 0.2 or self.seconds > 3600:
            raise ValueError(f"--seconds must be in (0.2, 3600], got {self.seconds}")
        if self.fps <= 0 or self.fps > 240:
            raise ValueError(f"--fps must be in (0, 240], got {self.fps}")
        for name in ("width", "height"):
            v = getattr(self, name)
            if v < 16 or v > 4096 or v % 2:
                raise ValueError(f"--{name} must be an even number of pixels in [16, 4096], got {v}")
        if not 1 <= self.views <= 16:
            raise ValueError(f"--views must be in [1, 16], got {self.views}")
        if not 0 <= self.identities <= 1000:
            raise ValueError(f"--identities must be in [0, 1000], got {self.identities}")
        if self.pose_scale < 0 or self.pose_scale > 2:
            raise ValueError(f"--pose-scale must be in [0, 2], got {self.pose_scale}")

    def run(self) -> List[Dict]:
        """Synthesise everything (raises ValueError on bad options); returns per-clip info dicts."""
        self._check()
        out = Path(self.out)
        if out.exists() and any(out.iterdir()):
            if not self.overwrite:
                raise ValueError(f"--out {out} is not empty (pass --overwrite to replace its contents)")
            for p in ("video.mp4", "audio.wav", "ground_truth.npz", "synth.json", "gt_masks", "cameras") + \
                    tuple(d.name for d in out.glob("id_[0-9]*")):
                q = out / p
                if q.is_dir():
                    shutil.rmtree(q)
                elif q.exists():
                    q.unlink()
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        if self.identities == 0:
            from avatar.synth.head import HeadStyle

            info = [self.render_identity(out, HeadStyle(spacing=self.spacing), SpeechStyle(),
                                         np.random.default_rng([self.seed, 0]))]
        else:
            info = []
            for i in range(self.identities):
                rng = np.random.default_rng([self.seed, 1000 + i])
                head, speech = sample_identity(rng, self.spacing)
                info.append(self.render_identity(out / f"id_{i:02d}", head, speech, rng))
        total = time.time() - t0
        frames = sum(d["frames"] * d["views"] for d in info)
        print(f"[synth] {len(info)} clip(s), {frames} frames in {total:.1f} s "
              f"({total / max(frames, 1):.3f} s/frame) -> {out}")
        return info

    def render_identity(self, out: Path, head, speech: SpeechStyle, rng: np.random.Generator) -> Dict:
        """Synthesise one clip (audio, motion, frames, ground truth) into folder `out`."""
        import torch

        from avatar.data.cameras import opengl_c2w_from_viewmat, rigid_inverse
        from avatar.media.audio import save_wav
        from avatar.media.video import VideoWriter
        from avatar.ops import rasterize
        from avatar.synth.head import deformed_landmarks, procedural_head

        out.mkdir(parents=True, exist_ok=True)
        F = int(round(self.seconds * self.fps))
        wav, mouth_s = synth_speech(F / self.fps, speech, rng)
        mouth = np.clip(per_frame_mean(mouth_s, F, self.fps), 0, 1)
        rms = np.sqrt(per_frame_mean(wav.astype(np.float64) ** 2, F, self.fps)).astype(np.float32)
        blink = blink_track(F, self.fps, speech.blink_interval, rng)
        amp = np.array([18.0, 10.0, 7.0]) * self.pose_scale
        head_to_world = pose_trajectory(F, self.fps, rng, amp, np.array([0.015, 0.01, 0.01]) * self.pose_scale)
        V_rig, K_rig = rig_cameras(self.views, self.width, self.height)          # [C,4,4], [C,3,3]
        C = self.views
        view = V_rig[None] @ head_to_world[:, None]                               # [F,C,4,4] head->cam
        lm3d = np.stack([deformed_landmarks(float(m), float(b), head) for m, b in zip(mouth, blink)])
        lm2d = project(lm3d[:, None], view, K_rig[None])                          # [F,C,478,2]

        save_wav(out / "audio.wav", wav, SAMPLE_RATE)
        cam_dirs = [out] if C == 1 else [out / "cameras" / f"cam{c:02d}" for c in range(C)]
        for d in cam_dirs:
            d.mkdir(parents=True, exist_ok=True)
        names = ["video.mp4"] if C == 1 else [f"cam{c:02d}.mp4" for c in range(C)]
        writers = [VideoWriter(d / n, self.fps, self.width, self.height, audio=wav, sr=SAMPLE_RATE, crf=self.crf)
                   for d, n in zip(cam_dirs, names)]
        mask_dirs = [d / "gt_masks" for d in cam_dirs]
        if self.masks:
            from avatar.media.image import save_image

            for d in mask_dirs:
                d.mkdir(exist_ok=True)
        bg = torch.tensor([list(BACKGROUND) + [1.0, 0, 0, 0, 0]] * C, dtype=torch.float32)   # [C, 8]
        Ks = torch.tensor(K_rig, dtype=torch.float32)
        t_render, backend_used, n_gauss, feats = 0.0, None, 0, None
        try:
            for f in range(F):
                t1 = time.time()
                g = procedural_head(float(mouth[f]), float(blink[f]), head)
                if feats is None:   # [N, 3 + 5]: colour, then one-hot mask label (constant per style)
                    feats = torch.zeros(len(g["labels"]), 8)
                    feats[torch.arange(len(g["labels"])), 3 + g["labels"]] = 1.0
                feats[:, :3] = g["colors"]
                with torch.no_grad():
                    img, alpha, meta = rasterize(g["means"], g["quats"], g["scales"], g["opacities"], feats,
                                                 torch.tensor(view[f], dtype=torch.float32), Ks,
                                                 self.width, self.height, backgrounds=bg, backend=self.backend,
                                                 check_finite=False)   # finite by construction (tested)
                t_render += time.time() - t1
                backend_used, n_gauss = meta["backend"], int(g["means"].shape[0])
                rgb = (img[..., :3].clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()   # [C,H,W,3]
                for c in range(C):
                    writers[c].write(rgb[c])
                if self.masks:
                    lab = img[..., 3:].argmax(-1).to(torch.uint8).numpy()               # [C,H,W]
                    for c in range(C):
                        save_image(mask_dirs[c] / f"{f:06d}.png", lab[c], png_compression=1)
            for w in writers:
                w.close()
        except BaseException:
            for w in writers:
                w.abort()
            raise
        if C > 1:
            shutil.copyfile(cam_dirs[0] / names[0], out / "video.mp4")
            frames = []
            for c in range(C):
                c2w_gl = opengl_c2w_from_viewmat(V_rig[c])
                frames.append({"file_path": f"cam{c:02d}/cam{c:02d}.mp4", "transform_matrix": c2w_gl.tolist(),
                               "fl_x": float(K_rig[c, 0, 0]), "fl_y": float(K_rig[c, 1, 1]),
                               "cx": float(K_rig[c, 0, 2]), "cy": float(K_rig[c, 1, 2]),
                               "w": self.width, "h": self.height})
            atomic_write_json(out / "cameras" / "transforms.json", {
                "camera_model": "OPENCV", "frames": frames,
                "avatar": {"version": 1, "synthetic": True, "world": "rig frame; the head's pose in it "
                           "per frame is ground_truth.npz head_to_world", "fps": self.fps}})
        styles = style_arrays(head, speech)
        for c, d in enumerate(cam_dirs):
            gt = {
                "fps": np.float64(self.fps), "width": np.int64(self.width), "height": np.int64(self.height),
                "K": np.repeat(K_rig[c][None], F, 0).astype(np.float32),
                "head_pose": rigid_inverse(view[:, c]).astype(np.float32),
                "viewmats": view[:, c].astype(np.float32),
                "mouth_open": mouth.astype(np.float32), "blink": blink.astype(np.float32),
                "landmarks2d": lm2d[:, c].astype(np.float32), "landmarks3d": lm3d.astype(np.float32),
                "audio_rms": rms, "head_to_world": head_to_world.astype(np.float32),
                "camera_c2w": rigid_inverse(V_rig[c]).astype(np.float32), "camera_index": np.int64(c),
                **styles,
            }
            _save_npz(d / "ground_truth.npz", gt)
            if c == 0 and d != out:
                _save_npz(out / "ground_truth.npz", gt)
        info = {"frames": F, "views": C, "fps": self.fps, "seconds": F / self.fps, "width": self.width,
                "height": self.height, "seed": self.seed, "backend": backend_used, "gaussians": n_gauss,
                "render_seconds_per_frame": t_render / max(F * 1, 1),
                "head_style": dataclasses.asdict(head), "speech_style": dataclasses.asdict(speech)}
        atomic_write_json(out / "synth.json", info)
        return info
