"""report/: a contact sheet (frames with landmarks and mask colours), plots of head pose, blink and
mouth openness over time, and summary.json (frames kept/dropped, fps in/out, durations, offsets,
warnings, long face losses)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np

from avatar.data import load_capture
from avatar.data.writer import atomic_write_json, encode_image, atomic_write_bytes

from .pipeline import STAGES, Context, config_dict

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
        a = np.where(lab > 0, 0.35, 0.0)[..., None]
        img = (img * (1 - a) + tint * a).astype(np.uint8)
        img = np.ascontiguousarray(cv2.resize(img, (tile, int(round(ds.height * s)))))
        for x, y in ds.tracks["landmarks2d"][i] * s:
            cv2.circle(img, (int(x), int(y)), 1, (255, 255, 255), -1)
        cv2.putText(img, f"#{i} t={ds.frame_times[i] / ds.fps:.2f}s", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 0), 1)
        r, c = divmod(k, cols)
        sheet[r * tile:r * tile + img.shape[0], c * tile:(c + 1) * tile] = img[:tile]
    return sheet


def _plots(ds, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .tracking import rotation_angles_deg

    t = ds.frame_times / ds.fps
    cam0 = ds.camera_ids == ds.camera_ids.min()
    ang = rotation_angles_deg(ds.tracks["head_pose"][cam0].astype(np.float64))
    pos = np.linalg.inv(ds.tracks["head_pose"][cam0].astype(np.float64))[:, :3, 3]  # head in camera
    fig, ax = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    for k, name in enumerate(("yaw", "pitch", "roll")):
        ax[0].plot(t[cam0], ang[:, k], ".-", ms=2, label=name)
    ax[0].set_ylabel("degrees")
    ax[0].legend(loc="upper right")
    for k, name in enumerate("xyz"):
        ax[1].plot(t[cam0], pos[:, k] - np.median(pos[:, k]), ".-", ms=2, label=f"{name} - median")
    ax[1].set_ylabel("head position (m)")
    ax[1].set_xlabel("time (s)")
    ax[1].legend(loc="upper right")
    fig.suptitle("head pose (camera 0)")
    fig.tight_layout()
    fig.savefig(folder / "head_pose.png", dpi=80)
    plt.close(fig)
    for key, label in (("blink", "blink (1 = closed)"), ("mouth_open", "mouth openness")):
        fig, ax = plt.subplots(figsize=(9, 2.5))
        ax.plot(t[cam0], ds.tracks[key][cam0], ".-", ms=2)
        ax.set_xlabel("time (s)")
        ax.set_ylabel(label)
        fig.tight_layout()
        fig.savefig(folder / f"{key}.png", dpi=80)
        plt.close(fig)


def write_report(ctx: Context) -> Dict:
    """Write ctx.out/report/ and return the summary dict."""
    folder = ctx.out / "report"
    folder.mkdir(exist_ok=True)
    ds = load_capture(ctx.out)
    atomic_write_bytes(folder / "contact_sheet.png", encode_image(contact_sheet(ds), "png", 3))
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
        "warnings": warnings,
        "settings": config_dict(ctx.cfg),
        "output": {"frames": ds.num_frames, "size": [ds.width, ds.height], "cameras": len(set(ds.camera_ids.tolist()))},
    }
    atomic_write_json(folder / "summary.json", summary)
    return {"landmark_coverage": summary["landmark_coverage"], "frames_kept": kept, "frames_dropped": decoded - kept}
