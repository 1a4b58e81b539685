"""eval.json, eval.md (a table) and plots (PNG) of evaluation results; every file is written atomically.

results = {"methods": {name: score_frames(...) result}, "reference": analyse_reference(...).result or
None, "meta": {...}}. `write_report(out_dir, results)` writes:
  eval.json               everything but images (per-frame series included)
  eval.md                 one row per method, the definitions of the metrics, why values are null
  mouth_opening.png       per-frame mouth opening, ground truth vs each method
  contact_<name>.png      sampled frames: ground truth / method / |error| (x4) rows
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

DEFINITIONS = {
    "psnr": "PSNR (dB), 10 log10(1/MSE) per frame on [0,1] RGB, mean over frames (identical = 100)",
    "ssim": "SSIM, Gaussian 11x11 sigma 1.5 window (3DGS), zero padding, mean over pixels and frames",
    "psnr_face": "PSNR on the face-skin + mouth-interior pixels of the capture masks",
    "ssim_face": "SSIM map averaged over the same face pixels",
    "lpips": "LPIPS v0.1 AlexNet (local weights only; null with the reason otherwise)",
    "lmd": "mouth landmark distance (px): iBUG 48-67 from mediapipe, mean-centred per frame, mean L2",
    "lmd_iod": "LMD divided by the ground truth's inter-ocular distance (landmarks 33-263), per frame",
    "lmd_uncentred": "LMD without the per-frame centring (head placement error included)",
    "mouth_open_corr": "Pearson correlation of per-frame mouth opening (inner-lip gap 13-14 / IOD) vs ground truth",
    "mouth_amplitude_ratio": "std(rendered opening) / std(ground-truth opening); 1 = same range of motion",
    "mouth_open_mae": "mean |rendered - ground-truth| mouth opening (fraction of IOD)",
    "speech_silence_ratio": "mean opening on voiced frames / on silent frames (VAD)",
    "envelope_corr": "best Pearson corr of opening with the speech RMS envelope (dB) within +-3 frames",
    "envelope_lag": "that lag in frames (> 0: the mouth follows the audio)",
    "envelope_corr_null": "the same against the envelope circularly shifted by half the clip (chance level)",
    "lse_c": "SyncNet confidence (median - min distance over +-15 offsets), higher is better",
    "lse_d": "SyncNet min mean distance over +-15 offsets, lower is better",
    "head_jitter": "mean |second difference| of head yaw/pitch/roll from landmarks (deg/frame^2)",
    "blinks_per_min": "blinks per minute (eye aspect ratio below 0.6 x its median)",
    "render_fps": "frames rendered per second in this run",
    "latency_ms": "mean wall time to render one frame (ms)",
}

TABLE_KEYS = ("psnr", "ssim", "psnr_face", "ssim_face", "lpips", "lmd", "lmd_iod", "mouth_open_corr",
              "mouth_amplitude_ratio", "mouth_open_mae", "speech_silence_ratio", "envelope_corr",
              "envelope_lag", "envelope_corr_null", "lse_c", "lse_d", "head_jitter", "blinks_per_min",
              "render_fps", "latency_ms")


def _atomic_bytes(path: Path, data: bytes) -> Path:
    from avatar.io.atomic import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return path


def _clean(o):
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items() if k != "images"}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (np.floating, float)):
        v = float(o)
        return v if math.isfinite(v) else None
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.ndarray):
        return _clean(o.tolist())
    return o


def write_json(path, obj) -> Path:
    """Atomic JSON (numpy values converted, non-finite floats as null, "images" dropped)."""
    return _atomic_bytes(Path(path), (json.dumps(_clean(obj), indent=2) + "\n").encode())


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    return f"{float(v):.4g}" if abs(float(v)) < 1000 else f"{float(v):.1f}"


def markdown(results: Dict) -> str:
    """The eval.md text: a table (rows = methods), definitions, and why values are null."""
    methods: Dict[str, Dict] = results["methods"]
    ref = results.get("reference")
    rows = dict(methods)
    if ref is not None:
        rows = {"ground truth (reference)": ref, **rows}
    keys = [k for k in TABLE_KEYS if any(r["summary"].get(k) is not None for r in rows.values())]
    meta = results.get("meta", {})
    lines = ["# avatar eval", ""]
    for k in ("capture", "split", "frames", "fps", "audio", "vad", "detector"):
        if meta.get(k) is not None:
            lines.append(f"- {k}: {meta[k]}")
    lines += ["", "| method | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(r["summary"].get(k)) for k in keys) + " |")
    lines += ["", "## Metrics", ""]
    lines += [f"- **{k}**: {DEFINITIONS[k]}" for k in keys]
    null_lines = []
    for name, r in rows.items():
        for k, why in sorted(r.get("notes", {}).items()):
            if k in TABLE_KEYS and r["summary"].get(k) is None:
                null_lines.append(f"- {name} / {k}: {why}")
    if null_lines:
        lines += ["", "## Not computed", ""] + null_lines
    return "\n".join(lines) + "\n"


def _fig_png(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def plot_opening(path, series: Dict[str, List[Optional[float]]], frames: Optional[List[int]] = None,
                 fps: Optional[float] = None) -> Path:
    """Line plot of per-frame mouth opening, one line per entry of `series` (name -> [T])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.2))
    for name, ys in series.items():
        y = np.array([np.nan if v is None else v for v in ys], np.float64)
        x = np.asarray(frames if frames is not None else np.arange(len(y)))
        style = dict(color="black", lw=2.0) if name.startswith("ground truth") else dict(lw=1.3)
        ax.plot(x, y, label=name, **style)
    ax.set_xlabel("capture frame" + (f" ({fps:g} fps)" if fps else ""))
    ax.set_ylabel("inner-lip gap / IOD")
    ax.set_title("mouth opening per frame (landmarks detected on the frames)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    data = _fig_png(fig)
    plt.close(fig)
    return _atomic_bytes(Path(path), data)


def contact_sheet(path, images, tile: int = 192, error_gain: float = 4.0) -> Path:
    """Columns = sampled frames; rows = ground truth / prediction / |error| x error_gain."""
    import cv2

    from avatar.media.image import save_image

    from .image import as_float

    if not images:
        raise ValueError("contact_sheet: no images")
    cols = []
    for _, g, p in images:
        g, p = as_float(g), as_float(p)
        h, w = g.shape[:2]
        s = tile / max(h, w)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        rs = [cv2.resize(x, size, interpolation=cv2.INTER_AREA) for x in
              (g, p, np.clip(np.abs(p - g) * error_gain, 0, 1))]
        cols.append(np.concatenate(rs, 0))
    hmax = max(c.shape[0] for c in cols)
    cols = [np.pad(c, ((0, hmax - c.shape[0]), (0, 2), (0, 0)), constant_values=1.0) for c in cols]
    return save_image(Path(path), np.concatenate(cols, 1))


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "method"


def write_report(out_dir, results: Dict) -> Dict[str, Path]:
    """Write eval.json, eval.md, mouth_opening.png and contact_<method>.png into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": write_json(out / "eval.json", results),
             "md": _atomic_bytes(out / "eval.md", markdown(results).encode())}
    series = {}
    ref = results.get("reference")
    if ref is not None:
        series["ground truth"] = ref["per_frame"]["mouth_opening"]
    for name, r in results["methods"].items():
        series[name] = r["per_frame"]["mouth_opening"]
    if any(any(v is not None for v in s) for s in series.values()):
        files["opening"] = plot_opening(out / "mouth_opening.png", series, results.get("meta", {}).get("frames_list"),
                                        results.get("meta", {}).get("fps"))
    for name, r in results["methods"].items():
        if r.get("images"):
            files[f"contact_{name}"] = contact_sheet(out / f"contact_{_slug(name)}.png", r["images"])
    return files
