"""The evaluation protocol on arrays: one ground-truth reference, any number of methods scored against it.

    ref = analyse_reference(gt_frames, fps, make_detector, audio=wav, face_masks=masks)
    res = score_frames(pred_frames, ref, make_detector, lpips=LpipsAlex(...) or reason, timing=...)
    res = score_frames(pred_frames, None, make_detector, fps=25, audio=wav)  # cross-driven: sync only

Frames are sequences (arrays or anything indexable with len) of [H, W, 3] uint8 / float [0, 1];
predicted and ground-truth frame i are the same instant and the same size. `make_detector()`
returns a fresh landmark detector (mediapipe tracks across frames, so each video gets its own):
`detector(frame_uint8, index) -> faces`, with an optional `.close()`.

Each result is {"summary": flat metrics (None where not computable), "notes": {metric: why None},
"per_frame": series for plots}. Image metrics are means of per-frame values (the field averages
per-frame PSNR, not one PSNR of the pooled MSE). Face region = capture mask labels face skin and
mouth interior (avatar.data.schema.LABELS "face", "mouth").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from . import image, landmarks as L, sync

SUMMARY_KEYS = (
    "frames", "frames_no_face", "psnr", "ssim", "psnr_face", "ssim_face", "lpips",
    "lmd", "lmd_iod", "lmd_uncentred", "mouth_open_corr", "mouth_amplitude_ratio", "mouth_open_mae",
    "speech_silence_ratio", "envelope_corr", "envelope_lag", "envelope_corr_null",
    "lse_c", "lse_d", "lse_offset", "head_jitter", "blinks_per_min", "render_fps", "latency_ms",
)


@dataclass
class Reference:
    """Ground truth analysed once: landmarks [T, 478, 2], opening [T], sync metrics of the real video."""
    frames: Sequence
    fps: float
    landmarks: np.ndarray
    opening: np.ndarray
    face_masks: Optional[Sequence] = None
    audio: Optional[np.ndarray] = None
    voiced: Optional[np.ndarray] = None
    vad_backend: Optional[str] = None
    result: Dict = field(default_factory=dict)


NO_DETECTOR = "no landmark detector given (landmark metrics need one, e.g. capture.landmarks' mediapipe)"
LANDMARK_KEYS = ("lmd", "lmd_iod", "lmd_uncentred", "mouth_open_corr", "mouth_amplitude_ratio", "mouth_open_mae",
                 "speech_silence_ratio", "envelope_corr", "envelope_lag", "envelope_corr_null", "head_jitter",
                 "blinks_per_min", "frames_no_face", "lse_c", "lse_d", "lse_offset")


def _detect(frames: Sequence, make_detector: Optional[Callable]) -> np.ndarray:
    """[T, 478, 2] landmarks (NaN rows: no face); all NaN when make_detector is None."""
    if make_detector is None:
        from avatar.data.schema import NUM_LANDMARKS

        return np.full((len(frames), NUM_LANDMARKS, 2), np.nan)
    det = make_detector()
    try:
        return L.detect_sequence((frames[i] for i in range(len(frames))), det)
    finally:
        close = getattr(det, "close", None)
        if close is not None:
            close()


def _voiced(audio, fps, T, vad: str):
    from avatar.audio.vad import voice_activity

    va = voice_activity(audio, fps, T, backend=vad)
    return va.voiced, va.backend


def _motion_metrics(lm: np.ndarray, opening: np.ndarray, fps: float, audio, voiced, out: Dict, notes: Dict) -> None:
    out["frames"] = int(len(lm))
    out["frames_no_face"] = int((~L.valid_frames(lm)).sum()) if len(lm) else 0
    out["head_jitter"] = L.jitter(L.head_angles(lm)) if len(lm) else None
    out["blinks_per_min"] = L.blink_rate(lm, fps)["blinks_per_min"] if len(lm) else None
    if audio is None:
        for k in ("speech_silence_ratio", "envelope_corr", "envelope_lag", "envelope_corr_null"):
            notes[k] = "no audio"
        return
    s = sync.audio_sync(opening, audio, fps, voiced)
    for k in ("speech_silence_ratio", "envelope_corr", "envelope_lag", "envelope_corr_null"):
        out[k] = s[k]
    if s["speech_silence_ratio"] is None:
        notes["speech_silence_ratio"] = (f"needs >= {sync.MIN_FRAMES} voiced and silent frames "
                                         f"(voiced {s['voiced_frames']}, silent {s['silent_frames']})")


def _empty() -> Dict:
    return {k: None for k in SUMMARY_KEYS}


def analyse_reference(gt_frames: Sequence, fps: float, make_detector: Callable, *, audio=None,
                      face_masks: Optional[Sequence] = None, vad: str = "auto") -> Reference:
    """Detect landmarks on the ground-truth frames and score the real video's own motion/sync
    (result["summary"] has the audio-only metrics of the real person: the target to match)."""
    lm = _detect(gt_frames, make_detector)
    opening = L.mouth_opening(lm) if len(lm) else np.zeros(0)
    voiced, backend = (_voiced(audio, fps, len(lm), vad) if audio is not None else (None, None))
    summ, notes = _empty(), {}
    _motion_metrics(lm, opening, fps, audio, voiced, summ, notes)
    summ.update(psnr=image.PSNR_CAP, ssim=1.0, lmd=0.0, lmd_iod=0.0, lmd_uncentred=0.0,
                mouth_open_corr=1.0, mouth_amplitude_ratio=1.0, mouth_open_mae=0.0)
    ref = Reference(gt_frames, float(fps), lm, opening, face_masks, audio, voiced, backend)
    ref.result = {"summary": summ, "notes": notes, "per_frame": {"mouth_opening": _list(opening)},
                  "vad": backend}
    return ref


def _list(a) -> List[Optional[float]]:
    return [None if not np.isfinite(v) else round(float(v), 6) for v in np.asarray(a, np.float64)]


def _face(mask) -> np.ndarray:
    from avatar.data.schema import LABELS

    m = np.asarray(mask)
    return (m == LABELS["face"]) | (m == LABELS["mouth"])


def score_frames(pred_frames: Sequence, ref: Optional[Reference], make_detector: Callable, *,
                 fps: Optional[float] = None, audio=None, vad: str = "auto",
                 lpips: Union[None, str, Callable] = "LPIPS not requested", syncnet=None,
                 syncnet_reason: str = "no SyncNet model given (--syncnet)",
                 timing: Optional[Dict[str, float]] = None,
                 timing_reason: str = "renders given as files: render speed not measured",
                 keep: Sequence[int] = ()) -> Dict:
    """Score one method's frames. ref=None: no ground truth (cross-driven), pass fps and audio.

    lpips: a callable (a, b) -> [T] distances (eval.lpips.LpipsAlex) or a string: why it is None.
    syncnet: a model with forward_lip/forward_aud (eval.syncnet.load_syncnet) or None.
    timing: {"fps": ..., "latency_ms": ...} measured by the caller that rendered the frames.
    keep: frame positions whose (gt, pred) pair is returned under "images" for contact sheets."""
    T = len(pred_frames)
    if ref is not None:
        if T != len(ref.frames):
            raise ValueError(f"score_frames: {T} predicted frames but {len(ref.frames)} ground-truth frames")
        fps, audio, voiced = ref.fps, ref.audio, ref.voiced
    else:
        if fps is None:
            raise ValueError("score_frames: fps is required without a ground-truth reference")
        voiced = _voiced(audio, fps, T, vad)[0] if audio is not None else None
    summ, notes, per = _empty(), {}, {}
    images = []
    if ref is not None:
        ps, ss, pf, sf = [], [], [], []
        for i in range(T):
            g, p = image.as_float(ref.frames[i]), image.as_float(pred_frames[i])
            if p.shape != g.shape:
                raise ValueError(f"score_frames: frame {i} is {p.shape}, ground truth {g.shape}")
            smap = image.ssim_map(p, g)
            ps.append(image.psnr(p, g))
            ss.append(float(smap.mean()))
            if ref.face_masks is not None:
                m = _face(ref.face_masks[i])
                if m.any():
                    pf.append(image.psnr(p, g, m))
                    sf.append(float(smap[m].mean()))
            if i in keep:
                images.append((i, g, p))
        summ.update(psnr=float(np.mean(ps)), ssim=float(np.mean(ss)))
        per.update(psnr=_list(ps), ssim=_list(ss))
        if pf:
            summ.update(psnr_face=float(np.mean(pf)), ssim_face=float(np.mean(sf)))
        else:
            notes["psnr_face"] = notes["ssim_face"] = ("no face masks" if ref.face_masks is None
                                                       else "no face pixels in the masks")
        if callable(lpips):
            d = [float(lpips(image.as_float(pred_frames[i])[None], image.as_float(ref.frames[i])[None])[0])
                 for i in range(T)]
            summ["lpips"] = float(np.mean(d))
            per["lpips"] = _list(d)
        else:
            notes["lpips"] = str(lpips)
    else:
        for k in ("psnr", "ssim", "psnr_face", "ssim_face", "lpips", "lmd", "lmd_iod", "lmd_uncentred",
                  "mouth_open_corr", "mouth_amplitude_ratio", "mouth_open_mae"):
            notes[k] = "no ground-truth frames (cross-driven)"

    lm = _detect(pred_frames, make_detector)
    opening = L.mouth_opening(lm) if T else np.zeros(0)
    per["mouth_opening"] = _list(opening)
    if ref is not None:
        d = L.lmd(ref.landmarks, lm)
        summ.update(lmd=d["lmd"], lmd_iod=d["lmd_iod"], lmd_uncentred=d["lmd_uncentred"])
        per["lmd"] = _list(L.lmd_per_frame(ref.landmarks, lm))
        o = L.opening_stats(ref.opening, opening)
        summ.update({k: o[k] for k in ("mouth_open_corr", "mouth_amplitude_ratio", "mouth_open_mae")})
        if d["lmd"] is None:
            notes["lmd"] = notes["lmd_iod"] = "no frame with a face in both ground truth and prediction"
    _motion_metrics(lm, opening, fps, audio, voiced, summ, notes)
    if make_detector is None:
        for k in LANDMARK_KEYS:
            summ[k] = None
            notes[k] = NO_DETECTOR

    if syncnet is not None and audio is not None:
        from .syncnet import SyncNetError, face_crops, lse

        try:
            r = lse(syncnet, face_crops([pred_frames[i] for i in range(T)], lm), audio, fps)
            summ.update(lse_c=r["lse_c"], lse_d=r["lse_d"], lse_offset=r["lse_offset"])
        except SyncNetError as e:
            notes["lse_c"] = notes["lse_d"] = str(e)
    else:
        notes["lse_c"] = notes["lse_d"] = syncnet_reason if syncnet is None else "no audio"
    if timing:
        summ["render_fps"] = timing.get("fps")
        summ["latency_ms"] = timing.get("latency_ms")
    else:
        notes["render_fps"] = notes["latency_ms"] = timing_reason
    out = {"summary": summ, "notes": {k: v for k, v in notes.items() if summ.get(k) is None},
           "per_frame": per}
    if images:
        out["images"] = images
    return out
