"""report/: a contact sheet (frames with landmarks and mask colours), plots of head pose, blink and
mouth openness over time, and summary.json (frames kept/dropped, fps in/out, durations, offsets,
warnings, long face losses)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np

from avatar.data import load_capture
from avatar.data.schema import LABELS
from avatar.data.writer import encode_image
from avatar.io.atomic import atomic_write_bytes, atomic_write_json
from capture.context import STAGES, Context, config_dict

# label colours (RGB) for overlays: background none, head, face, mouth, torso
_COLOURS = np.array([[0, 0, 0], [255, 170, 0], [0, 200, 255], [255, 0, 80], [120, 255, 0]], np.float32)


def contact_sheet(ds, n: int = 12, cols: int = 4, tile: int = 256) -> np.ndarray:
    """uint8 [rows * tile, cols * tile, 3]: evenly spaced frames, masks tinted, landmarks as dots."""
    import cv2

    idx = np.linspace(0, ds.num_frames - 1, min(n, ds.num_frames)).round().astype(int)
    rows = (len(idx) + cols - 1) // cols
    sheet = np.zeros((rows * tile, cols * tile, 3), np.uint8)
    s = tile / ds.width
    for k, i in enumerate(idx):
        img = ds.image_uint8(i).astype(np.float32)
        lab = ds.mask(i)
        tint = _COLOURS[lab]
        a = np.where(lab != LABELS["background"], 0.35, 0.0)[..., None]
        img = (img * (1 - a) + tint * a).astype(np.uint8)
        img = np.ascontiguousarray(cv2.resize(img, (tile, int(round(ds.height * s)))))
        for x, y in ds.tracks["landmarks2d"][i] * s:
            cv2.circle(img, (int(x), int(y)), 1, (255, 255, 255), -1)
        cv2.putText(img, f"#{i} t={ds.frame_times[i] / ds.fps:.2f}s", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 0), 1)
        r, c = divmod(k, cols)
        sheet[r * tile:r * tile + img.shape[0], c * tile:(c + 1) * tile] = img[:tile]
    return sheet


def _panel(t: np.ndarray, series, title: str, ylabel: str, size=(900, 200)) -> np.ndarray:
    """One line-plot panel drawn with OpenCV (uint8 [h, w, 3] RGB): axes, ticks, legend.
    (OpenCV rather than matplotlib: the report is part of the timed pipeline and this is ~50x faster.)"""
    import cv2

    W, H = size
    img = np.full((H, W, 3), 255, np.uint8)
    L, R, T, B = 70, 110, 24, 30
    ys = np.concatenate([np.asarray(y, np.float64) for _, y, _ in series]) if series else np.zeros(1)
    lo, hi = float(np.nanmin(ys)), float(np.nanmax(ys))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    t0, t1 = float(t.min()), float(max(t.max(), t.min() + 1e-6))

    def px(x, y):
        return (L + (x - t0) / (t1 - t0) * (W - L - R), T + (hi - y) / (hi - lo) * (H - T - B))

    cv2.rectangle(img, (L, T), (W - R, H - B), (0, 0, 0), 1)
    for k in range(5):
        yv = lo + (hi - lo) * k / 4
        _, yp = px(t0, yv)
        cv2.line(img, (L - 4, int(yp)), (L, int(yp)), (0, 0, 0), 1)
        cv2.putText(img, f"{yv:.3g}", (4, int(yp) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    for k in range(6):
        xv = t0 + (t1 - t0) * k / 5
        xp, _ = px(xv, lo)
        cv2.line(img, (int(xp), H - B), (int(xp), H - B + 4), (0, 0, 0), 1)
        cv2.putText(img, f"{xv:.1f}s", (int(xp) - 12, H - B + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1,
                    cv2.LINE_AA)
    cv2.putText(img, f"{title} ({ylabel})", (L, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for k, (name, y, colour) in enumerate(series):
        pts = np.array([px(a, b) for a, b in zip(t, y)], np.float64)
        cv2.polylines(img, [np.round(pts * 4).astype(np.int32)], False, colour, 1, cv2.LINE_AA, shift=2)
        cv2.line(img, (W - R + 8, T + 10 + 16 * k), (W - R + 28, T + 10 + 16 * k), colour, 2)
        cv2.putText(img, name, (W - R + 32, T + 14 + 16 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return img


def _plots(ds, folder: Path) -> None:
    """report/head_pose.png, blink.png, mouth_open.png and tracks.png (all four panels), camera 0."""
    from .tracking import rotation_angles_deg

    cam0 = ds.camera_ids == ds.camera_ids.min()
    t = ds.frame_times[cam0] / ds.fps
    ang = rotation_angles_deg(ds.tracks["head_pose"][cam0].astype(np.float64))
    pos = np.linalg.inv(ds.tracks["head_pose"][cam0].astype(np.float64))[:, :3, 3]  # head in camera
    rgb = [(31, 119, 180), (255, 127, 14), (44, 160, 44)]
    panels = {
        "head_pose": np.vstack([
            _panel(t, [(n, ang[:, k], rgb[k]) for k, n in enumerate(("yaw", "pitch", "roll"))],
                   "head rotation", "degrees"),
            _panel(t, [(f"{n}-med", 100 * (pos[:, k] - np.median(pos[:, k])), rgb[k]) for k, n in enumerate("xyz")],
                   "head position in the camera", "cm")]),
        "blink": _panel(t, [("blink", ds.tracks["blink"][cam0], (148, 103, 189))], "blink", "1 = closed"),
        "mouth_open": _panel(t, [("mouth", ds.tracks["mouth_open"][cam0], (214, 39, 40))], "mouth openness",
                             "inner-lip gap / width"),
    }
    panels["tracks"] = np.vstack(list(panels.values()))
    for name, img in panels.items():
        atomic_write_bytes(folder / f"{name}.png", encode_image(img, "png", 1))


def write_report(ctx: Context) -> Dict:
    """Write ctx.out/report/ and return the summary dict."""
    folder = ctx.out / "report"
    folder.mkdir(exist_ok=True)
    ds = load_capture(ctx.out)
    atomic_write_bytes(folder / "contact_sheet.png", encode_image(contact_sheet(ds), "png", 1))
    _plots(ds, folder)
    markers = {s: ctx.read_marker(s) or {} for s in STAGES}
    probe = markers["probe"].get("info", {})
    frames = markers["frames"].get("info", {}).get("streams", {})
    lmk = markers["landmarks"].get("info", {}).get("streams", {})
    warnings = [w for s in STAGES for w in markers[s].get("warnings", [])] + list(ctx.warnings)
    decoded = sum(v["num_frames"] for v in frames.values())
    kept = sum(v["kept"] for v in lmk.values())
    sources = [s for st in probe.get("streams", []) for s in st["sources"]]
    summary = {
        "frames_decoded": decoded,
        "frames_kept": kept,
        "frames_dropped": decoded - kept,
        "landmark_coverage": round(kept / decoded, 4) if decoded else 0.0,
        "fps_in": [s.get("measured_fps", s.get("fps")) for s in sources],
        "fps_out": ctx.cfg.fps,
        "video_durations_s": [s.get("duration") for s in sources],
        "dataset_duration_s": round(decoded / ctx.cfg.fps / max(1, len(frames)), 4),
        "audio": markers["audio"].get("info", {}),
        "long_face_losses_s": {k: v.get("long_losses_s", []) for k, v in lmk.items()},
        "tracking": markers["tracking"].get("info", {}).get("streams", {}),
        "masks": markers["masks"].get("info", {}).get("streams", {}),
        "background": markers["background"].get("info", {}).get("streams", {}),
        "split": markers["split"].get("info", {}),
        "stage_seconds": {s: markers[s].get("seconds") for s in STAGES if markers[s]},
        "stage_cpu_seconds": {s: markers[s].get("cpu_seconds") for s in STAGES if markers[s]},
        "warnings": warnings,
        "settings": config_dict(ctx.cfg),
        "output": {"frames": ds.num_frames, "size": [ds.width, ds.height], "cameras": len(set(ds.camera_ids.tolist()))},
    }
    atomic_write_json(folder / "summary.json", summary)
    return {"landmark_coverage": summary["landmark_coverage"], "frames_kept": kept, "frames_dropped": decoded - kept}
