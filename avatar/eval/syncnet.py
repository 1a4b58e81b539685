"""LSE-C / LSE-D (Prajwal et al. 2020, Wav2Lip) with a SyncNet (Chung & Zisserman 2016) the user supplies.

The computation follows syncnet_python's `SyncNetInstance.evaluate`:
  video   face crops 224x224, BGR, float 0..255, windows of 5 frames -> lip features [N, D]
  audio   MFCC (13 coefficients, 100 Hz, python_speech_features' defaults) -> windows of 20 MFCC
          frames starting at 4 x frame index -> audio features [N, D]
  dists   for each video window i, Euclidean distance to the audio windows i + o, o in
          [-vshift, vshift] (zero features outside the clip), averaged over i -> mdist [2 vshift + 1]
  LSE-D = min(mdist), LSE-C = median(mdist) - min(mdist), offset = vshift - argmin (frames)

The model is anything with `forward_lip(x [B, 3, 5, 224, 224]) -> [B, D]` and
`forward_aud(x [B, 1, 13, 20]) -> [B, D]`: a TorchScript file (torch.jit.save of a module whose two
methods are @torch.jit.export-ed), or a state dict (e.g. syncnet_v2.model) plus `arch="module:Class"`
naming an importable nn.Module class to load it into. Nothing is downloaded.

Face crops here come from the detected landmarks (a square around the face box, 1.4x its larger
side), not from syncnet_python's S3FD track, so absolute values differ slightly from published ones.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from avatar.media.timeline import SAMPLE_RATE

CROP = 224
CROP_SCALE = 1.4


class SyncNetError(ValueError):
    """The SyncNet model could not be loaded or run (the message names the file)."""


def _mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def _imel(m):
    return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


def mfcc(wav, sr: int = SAMPLE_RATE, numcep: int = 13, nfilt: int = 26, nfft: int = 512,
         winlen: float = 0.025, winstep: float = 0.01, preemph: float = 0.97, ceplifter: int = 22) -> np.ndarray:
    """MFCC [N, numcep] with python_speech_features.mfcc's defaults (rectangular window, c0 replaced
    by the log frame energy, sinusoidal lifter), so SyncNet sees the features it was trained on."""
    from scipy.fft import dct

    x = np.asarray(wav, np.float64)
    x = np.append(x[0], x[1:] - preemph * x[:-1]) if x.size else x
    flen, fstep = int(round(winlen * sr)), int(round(winstep * sr))
    n = 1 if len(x) <= flen else 1 + int(np.ceil((len(x) - flen) / fstep))
    pad = np.zeros((n - 1) * fstep + flen)
    pad[:len(x)] = x
    idx = np.arange(flen)[None, :] + fstep * np.arange(n)[:, None]
    frames = pad[idx]  # [N, flen]
    pspec = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft  # [N, nfft/2 + 1]
    energy = pspec.sum(1)
    energy = np.where(energy == 0, np.finfo(float).eps, energy)
    pts = _imel(np.linspace(_mel(0), _mel(sr / 2), nfilt + 2))
    bins = np.floor((nfft + 1) * pts / sr).astype(int)
    fb = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        for k in range(bins[j], bins[j + 1]):
            fb[j, k] = (k - bins[j]) / (bins[j + 1] - bins[j])
        for k in range(bins[j + 1], bins[j + 2]):
            fb[j, k] = (bins[j + 2] - k) / (bins[j + 2] - bins[j + 1])
    feat = pspec @ fb.T
    feat = np.log(np.where(feat == 0, np.finfo(float).eps, feat))
    c = dct(feat, type=2, axis=1, norm="ortho")[:, :numcep]
    lift = 1 + (ceplifter / 2.0) * np.sin(np.pi * np.arange(numcep) / ceplifter)
    c = c * lift
    c[:, 0] = np.log(energy)
    return c.astype(np.float32)


def load_syncnet(path, arch: Optional[str] = None, device: str = "cpu"):
    """A SyncNet from `path`: TorchScript (arch=None) or a state dict loaded into `arch` ("module:Class")."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise SyncNetError(f"--syncnet {p}: file not found")
    if arch is None:
        try:
            m = torch.jit.load(str(p), map_location=device)
        except Exception as e:  # noqa: BLE001 - any failure means "not TorchScript"
            raise SyncNetError(f"--syncnet {p}: not a TorchScript file ({type(e).__name__}); for a state dict "
                               f"such as syncnet_v2.model also pass --syncnet-arch module:Class") from None
    else:
        mod, _, cls = arch.partition(":")
        try:
            m = getattr(importlib.import_module(mod), cls)()
        except (ImportError, AttributeError, TypeError) as e:
            raise SyncNetError(f"--syncnet-arch {arch!r}: cannot build it ({e})") from None
        try:
            sd = torch.load(str(p), map_location=device, weights_only=True)
            if isinstance(sd, dict) and "state_dict" in sd:
                sd = sd["state_dict"]
            m.load_state_dict(sd)
        except Exception as e:  # noqa: BLE001
            raise SyncNetError(f"--syncnet {p}: cannot load into {arch} ({e})") from None
    for meth in ("forward_lip", "forward_aud"):
        if not hasattr(m, meth):
            raise SyncNetError(f"--syncnet {p}: the model has no {meth}() method")
    return m.eval() if hasattr(m, "eval") else m


def face_crops(frames, landmarks) -> np.ndarray:
    """[T, 224, 224, 3] uint8 RGB square crops around each frame's face box (the previous frame's box
    where no face was found; the first found box before that). frames [T, H, W, 3], landmarks [T, 478, 2]."""
    import cv2

    lm = np.asarray(landmarks, np.float64)
    ok = np.isfinite(lm).all((1, 2))
    if not ok.any():
        raise SyncNetError("LSE: no face found in any frame")
    out, box = [], None
    first = int(np.flatnonzero(ok)[0])
    for t, f in enumerate(frames):
        if ok[t] or box is None:
            pts = lm[t] if ok[t] else lm[first]
            lo, hi = pts.min(0), pts.max(0)
            c, half = (lo + hi) / 2, CROP_SCALE * (hi - lo).max() / 2
            box = (c, half)
        c, half = box
        H, W = f.shape[:2]
        s = max(2, int(round(2 * half)))
        x0 = int(np.clip(round(c[0] - half), -s, W))
        y0 = int(np.clip(round(c[1] - half), -s, H))
        padded = cv2.copyMakeBorder(np.ascontiguousarray(f), s, s, s, s, cv2.BORDER_REPLICATE)
        crop = padded[y0 + s:y0 + 2 * s, x0 + s:x0 + 2 * s]
        out.append(cv2.resize(crop, (CROP, CROP), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def lse(model, crops, wav, fps: float = 25.0, vshift: int = 15, batch: int = 20) -> Dict[str, float]:
    """{"lse_d", "lse_c", "lse_offset", "windows"} of face crops [T, 224, 224, 3] uint8 RGB and 16 kHz audio."""
    import torch

    if abs(fps - 25.0) > 1e-3:
        raise SyncNetError(f"LSE needs 25 fps video (SyncNet's 4 MFCC frames per video frame), got {fps}")
    crops = np.asarray(crops)
    cc = mfcc(wav)  # [N, 13]
    last = min(len(crops) - 5, len(cc) // 4 - 5)
    if last <= 0:
        raise SyncNetError(f"LSE: clip too short ({len(crops)} frames, {len(wav) / SAMPLE_RATE:.2f} s of audio)")
    vid = torch.from_numpy(crops[..., ::-1].astype(np.float32)).permute(3, 0, 1, 2)  # [3, T, 224, 224] BGR
    aud = torch.from_numpy(cc.T.copy())  # [13, N]
    lip, au = [], []
    with torch.no_grad():
        for s in range(0, last, batch):
            idx = range(s, min(last, s + batch))
            lip.append(model.forward_lip(torch.stack([vid[:, i:i + 5] for i in idx])))
            au.append(model.forward_aud(torch.stack([aud[None, :, 4 * i:4 * i + 20] for i in idx])))
    lip_f, aud_f = torch.cat(lip).float(), torch.cat(au).float()  # [N, D]
    win = 2 * vshift + 1
    aud_p = torch.nn.functional.pad(aud_f, (0, 0, vshift, vshift))
    d = torch.stack([torch.nn.functional.pairwise_distance(lip_f[[i]].repeat(win, 1), aud_p[i:i + win])
                     for i in range(len(lip_f))])  # [N, win]
    mdist = d.mean(0)
    minval, minidx = torch.min(mdist, 0)
    return {"lse_d": float(minval), "lse_c": float(torch.median(mdist) - minval),
            "lse_offset": int(vshift - int(minidx)), "windows": int(len(lip_f))}
