"""The ten capture stages. Each reads earlier stages' outputs from ctx.work, writes its own, and
returns an info dict that the pipeline stores in its marker (and the report summarises)."""
from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List

import numpy as np

from avatar.audio.timeline import SAMPLE_RATE
from avatar.data.schema import NUM_LANDMARKS
from avatar.io.atomic import atomic_path, atomic_write_json
from capture.context import Context

from .errors import CaptureError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


# ---------------------------------------------------------------------------------------- helpers
def _streams(ctx: Context) -> List[Dict]:
    return ctx.stage_info("probe")["streams"]


def _frame_dir(ctx: Context, cam: int) -> Path:
    return ctx.work / "frames" / f"c{cam}"


def _store(ctx: Context, cam: int):
    """The working frames of camera `cam` (format and size recorded by the frames stage)."""
    from .framestore import FrameStore

    info = ctx.stage_info("frames")["streams"][str(cam)]
    return FrameStore(_frame_dir(ctx, cam), info["format"], tuple(info["size"]))


def _mask_path(ctx: Context, cam: int, n: int) -> Path:
    return ctx.work / "masks" / f"c{cam}" / f"{n:06d}.png"


def read_rgb(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise CaptureError(f"{path}: missing or unreadable image")
    return np.ascontiguousarray(img[..., ::-1])


def _write_img(path: Path, img: np.ndarray, ext: str) -> None:
    from avatar.data.writer import encode_image
    from avatar.io.atomic import atomic_write_bytes

    atomic_write_bytes(path, encode_image(img, ext, png_compression=1, jpeg_quality=97))


def _frame_list(folder: Path) -> List[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise CaptureError(f"{folder}: no image files ({', '.join(IMAGE_EXTS)})")
    return files


def _chunks(items: np.ndarray, parts: int) -> List[np.ndarray]:
    """Split into at most `parts` contiguous, non-empty chunks."""
    parts = max(1, min(parts, len(items)))
    return [c for c in np.array_split(np.asarray(items), parts) if len(c)]


def _run_chunks(fn, chunks: List[np.ndarray]) -> List:
    """fn(chunk) for each chunk on its own thread (mediapipe graphs release the GIL while they run)."""
    if len(chunks) <= 1:
        return [fn(c) for c in chunks]
    with ThreadPoolExecutor(len(chunks)) as pool:
        return list(pool.map(fn, chunks))


def _npz(path: Path, stage: str) -> Dict[str, np.ndarray]:
    if not path.is_file():
        raise CaptureError(f"{path}: missing output of stage '{stage}' (rerun with --from {stage})")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _save_npz(path: Path, **arrays) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


# ------------------------------------------------------------------------------------------ probe
def stage_probe(ctx: Context) -> Dict:
    """Inspect the inputs; refuse what cannot work; decide working sizes (one stream per camera)."""
    from .decode import work_size
    from .probe import probe, require_video

    cfg = ctx.cfg
    if not ctx.inputs:
        raise CaptureError("no input: give one or more videos (or, with --rig, per-camera videos/frame folders)")
    if not cfg.fps > 0:
        raise CaptureError(f"--fps must be > 0, got {cfg.fps}")
    sources = []
    for p in ctx.inputs:
        if ctx.rig and p.is_dir():
            files = _frame_list(p)
            import cv2

            im = cv2.imread(str(files[0]))
            if im is None:
                raise CaptureError(f"{files[0]}: unreadable image")
            sources.append({"path": str(p), "kind": "folder", "num_frames": len(files),
                            "display_size": [im.shape[1], im.shape[0]], "fps": cfg.fps, "has_audio": False})
            continue
        info = probe(p)
        require_video(info)
        d = info.to_dict()
        d["kind"] = "video"
        sources.append(d)
        if info.rotation:
            ctx.log(f"[capture] {p}: rotation {info.rotation} deg (applied while decoding)")
        if info.variable_fps:
            ctx.warn(f"{p}: variable frame rate (mean {info.measured_fps:.3f} fps vs base {info.tbr} fps); "
                     f"resampled to a constant {cfg.fps} fps")
        elif abs(info.fps - cfg.fps) > 1e-3:
            ctx.log(f"[capture] {p}: {info.fps} fps resampled to {cfg.fps} fps")
    streams = []
    if ctx.rig:
        from .rig import load_calibration, match_sources

        cams = load_calibration(ctx.rig)
        order = match_sources(cams, ctx.inputs)
        for src, ci in zip(sources, order):
            cam = cams[ci]
            ws = work_size(tuple(src["display_size"]), cfg.work_max_size)
            sx, sy = ws[0] / cam["size"][0], ws[1] / cam["size"][1]
            if abs(cam["size"][0] / cam["size"][1] - src["display_size"][0] / src["display_size"][1]) > 0.01:
                raise CaptureError(f"{src['path']}: frames are {src['display_size']} but camera {cam['name']} "
                                   f"was calibrated at {list(cam['size'])} (aspect differs)")
            K = np.diag([sx, sy, 1.0]) @ cam["K"]
            streams.append({"camera_id": len(streams), "name": cam["name"], "sources": [src],
                            "work_size": list(ws), "K": K.tolist(), "c2w_rig": cam["c2w"].tolist()})
    else:
        ds0 = sources[0]["display_size"]
        for s in sources[1:]:
            if abs(s["display_size"][0] / s["display_size"][1] - ds0[0] / ds0[1]) > 0.01:
                raise CaptureError(f"{s['path']}: aspect {s['display_size']} differs from {sources[0]['path']} "
                                   f"{ds0}; capture clips of one camera together")
        ws = work_size(tuple(ds0), cfg.work_max_size)
        streams.append({"camera_id": 0, "name": "cam0", "sources": sources, "work_size": list(ws), "K": None,
                        "c2w_rig": None})
    if not cfg.allow_no_audio and not any(s.get("has_audio") for st in streams for s in st["sources"]):
        raise CaptureError(f"{ctx.inputs[0]}: has no audio track; pass --allow-no-audio to capture without "
                           f"audio (training that needs audio will refuse such a dataset)")
    return {"streams": streams}


# ----------------------------------------------------------------------------------------- frames
def stage_frames(ctx: Context) -> Dict:
    """Decode every stream at the constant output fps and the working size into working frames."""
    import cv2

    from .decode import iter_frames
    from .framestore import FrameStore, choose_format
    from avatar.media.probe import MediaInfo

    cfg = ctx.cfg
    out = {}
    if (ctx.work / "frames").exists():
        shutil.rmtree(ctx.work / "frames")
    for st in _streams(ctx):
        cam = st["camera_id"]
        w, h = st["work_size"]
        est = sum(src.get("num_frames", 0) / (src.get("fps") or cfg.fps) * cfg.fps for src in st["sources"])
        fmt = choose_format(cfg.work_format, (w, h), est * 1.05 + 10, cfg.raw_max_gb * 1e9)
        store = FrameStore(_frame_dir(ctx, cam), fmt, (w, h))
        n = 0
        per_source = []
        with store.writer(cfg.threads) as wr:
            for src in st["sources"]:
                start = n
                report: Dict = {}
                if src["kind"] == "folder":
                    frames = (cv2.resize(read_rgb(p), (w, h), interpolation=cv2.INTER_AREA)
                              for p in _frame_list(Path(src["path"])))
                else:
                    fields = {k: src[k] for k in MediaInfo.__dataclass_fields__}
                    frames = iter_frames(MediaInfo(**fields), cfg.fps, (w, h), threads=cfg.threads, report=report)
                for img in frames:
                    wr.append(img)
                    n += 1
                count = n - start
                if src["kind"] == "video":
                    stream_s = src["num_frames"] / src["fps"] if src.get("fps") else src["duration"]
                    expected = min(src["duration"], stream_s) * cfg.fps
                    errors = report.get("stderr", "").strip()
                    if errors:
                        tail = " | ".join(errors.splitlines()[-2:])[-200:]
                        ctx.warn(f"{src['path']}: the decoder reported errors (truncated or corrupt file?): {tail}; "
                                 f"{count} frames decoded of a {src['duration']:.2f} s video")
                    elif count < expected - max(2.0, 0.02 * expected):
                        ctx.warn(f"{src['path']}: decoded {count} frames, expected ~{expected:.0f} "
                                 f"(truncated or corrupt file?)")
                per_source.append({"path": src["path"], "first": start, "count": count})
        out[str(cam)] = {"num_frames": n, "sources": per_source, "format": fmt, "size": [w, h]}
        ctx.log(f"[capture] frames: camera {cam}: {n} frames at {cfg.fps} fps, {w}x{h} ({fmt})")
    return {"streams": out}


def _num_frames(ctx: Context, cam: int) -> int:
    return int(ctx.stage_info("frames")["streams"][str(cam)]["num_frames"])


# ------------------------------------------------------------------------------------------ audio
def _load_audio(ctx: Context, path: str) -> np.ndarray:
    """16 kHz mono via avatar.media; its warnings (e.g. a damaged stream) go to the capture report."""
    import warnings

    from avatar.media.audio import AudioError, load_audio

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            wav = load_audio(path, sr=SAMPLE_RATE)
        except AudioError as e:
            raise CaptureError(str(e)) from None
    for w in caught:
        ctx.warn(str(w.message))
    return wav


def stage_audio(ctx: Context) -> Dict:
    """Extract 16 kHz mono audio aligned to the frame timeline (each clip trimmed/padded to its
    frames' duration, so clips concatenate in step with the frames); report duration offsets."""
    from avatar.media.audio import save_wav

    cfg = ctx.cfg
    st = _streams(ctx)[0]
    frames_info = {s["path"]: s for s in ctx.stage_info("frames")["streams"]["0"]["sources"]} \
        if (ctx.work / "stages" / "frames.json").exists() else {}
    pieces, offsets = [], []
    has_audio = False
    for src in st["sources"]:
        n = frames_info.get(src["path"], {}).get("count")
        video_s = n / cfg.fps if n else src.get("duration", 0.0)
        target = int(round(video_s * SAMPLE_RATE))
        if src.get("has_audio"):
            wav = _load_audio(ctx, src["path"])
            has_audio = True
            audio_s = len(wav) / SAMPLE_RATE
            # the video's own length (its frames), not the container's (the longer of its streams)
            # (ffmpeg's "fps" is the stream's average rate, so frames / fps is the stream's duration)
            own_s = src["num_frames"] / src["fps"] if src.get("num_frames") and src.get("fps") else video_s
            off = audio_s - own_s
            offsets.append({"path": src["path"], "audio_s": round(audio_s, 4), "video_s": round(own_s, 4),
                            "offset_s": round(off, 4)})
            if abs(off) > cfg.max_av_offset_s:
                ctx.warn(f"{src['path']}: audio is {audio_s:.3f} s, video {own_s:.3f} s (offset {off:+.3f} s); "
                         f"audio kept aligned at t = 0 and trimmed/padded to the frames")
        else:
            wav = np.zeros(0, np.float32)
        wav = wav[:target] if len(wav) >= target else np.pad(wav, (0, target - len(wav)))
        pieces.append(wav.astype(np.float32))
    path = ctx.work / "audio.wav"
    if has_audio:
        save_wav(path, np.concatenate(pieces).astype(np.float32), SAMPLE_RATE)
    else:
        if not cfg.allow_no_audio:
            raise CaptureError(f"{st['sources'][0]['path']}: has no audio track; pass --allow-no-audio")
        ctx.warn("no audio: captured with --allow-no-audio (training that needs audio will refuse)")
        if path.exists():
            path.unlink()
    return {"has_audio": has_audio, "offsets": offsets,
            "duration_s": round(sum(len(p) for p in pieces) / SAMPLE_RATE, 4)}


# ------------------------------------------------------------------------------------------ faces
def stage_faces(ctx: Context) -> Dict:
    """Run the landmark backend on every working frame; keep every face it finds. Each source clip
    is split into `threads` contiguous chunks, each with its own backend instance on its own thread
    (tracking state never crosses a cut; select_track joins the chunks by overlap)."""
    from .landmarks import make_backend

    cfg = ctx.cfg
    out = {}
    per_stream = ctx.stage_info("frames")["streams"]
    for st in _streams(ctx):
        cam = st["camera_id"]
        N = _num_frames(ctx, cam)
        K = max(1, cfg.max_faces)
        faces = np.full((N, K, NUM_LANDMARKS, 2), np.nan, np.float32)
        counts = np.zeros(N, np.int32)
        for src, part in zip(st["sources"], per_stream[str(cam)]["sources"]):
            sp = Path(src["path"])
            known = cfg.known_landmarks or (sp / "ground_truth.npz" if sp.is_dir() else sp.parent / "ground_truth.npz")
            first, count = part["first"], part["count"]

            frames = _store(ctx, cam)

            def work(chunk, src=src, known=known, first=first, frames=frames):
                # one backend per chunk: a model instance per thread, tracking restarts at the chunk start
                be = make_backend(cfg.backend, max_faces=cfg.max_faces, min_confidence=cfg.min_detection_confidence,
                                  known_path=known, src_fps=src.get("fps") or cfg.fps, out_fps=cfg.fps,
                                  src_size=src["display_size"], work_size=st["work_size"])
                try:
                    for n in chunk:
                        found = be(frames.read(int(n)), int(n) - first)[:K]
                        counts[n] = len(found)
                        for k, lm in enumerate(found):
                            faces[n, k] = lm
                finally:
                    be.close()

            _run_chunks(work, _chunks(np.arange(first, first + count), cfg.threads))
        _save_npz(ctx.work / f"faces_c{cam}.npz", faces=faces, counts=counts)
        out[str(cam)] = {"frames": N, "with_face": int((counts > 0).sum()), "max_faces_seen": int(counts.max())}
        ctx.log(f"[capture] faces: camera {cam}: a face in {(counts > 0).sum()}/{N} frames ({cfg.backend})")
    return {"streams": out}


# -------------------------------------------------------------------------------------- landmarks
def stage_landmarks(ctx: Context) -> Dict:
    """Track one face per stream (the largest, consistently); drop frames without it; report losses."""
    from .landmarks import runs, select_track

    cfg = ctx.cfg
    out = {}
    usable_max = 0.0
    for st in _streams(ctx):
        cam = st["camera_id"]
        z = _npz(ctx.work / f"faces_c{cam}.npz", "faces")
        N = len(z["counts"])
        lm, valid, multi = select_track(z["faces"], z["counts"])
        src0 = st["sources"][0]["path"]
        if not valid.any():
            raise CaptureError(f"{src0}: no face found in any of its {N} frames (backend {cfg.backend})")
        if multi.any():
            ctx.warn(f"{src0}: several faces in {int(multi.sum())}/{N} frames; tracking the largest one "
                     f"consistently")
        losses = []
        for a, b in runs(~valid):
            if (b - a) / cfg.fps >= cfg.long_loss_s:
                losses.append([round(a / cfg.fps, 3), round(b / cfg.fps, 3)])
        if losses:
            ctx.warn(f"{src0}: face lost for >= {cfg.long_loss_s} s at " +
                     ", ".join(f"{a:.2f}-{b:.2f} s" for a, b in losses))
        _save_npz(ctx.work / f"landmarks_c{cam}.npz", landmarks2d=lm, valid=valid, multi=multi)
        usable = valid.sum() / cfg.fps
        usable_max = max(usable_max, usable)
        out[str(cam)] = {"frames": N, "kept": int(valid.sum()), "dropped": int((~valid).sum()),
                         "coverage": round(float(valid.mean()), 4), "multi_face_frames": int(multi.sum()),
                         "long_losses_s": losses}
    if usable_max < cfg.min_seconds:
        raise CaptureError(f"{ctx.inputs[0]}: only {usable_max:.2f} s of frames with a tracked face; at least "
                           f"{cfg.min_seconds} s are needed (--min-seconds)")
    return {"streams": out}


def _landmarks(ctx: Context, cam: int) -> Dict[str, np.ndarray]:
    return _npz(ctx.work / f"landmarks_c{cam}.npz", "landmarks")


# --------------------------------------------------------------------------------------- tracking
def stage_tracking(ctx: Context) -> Dict:
    """Head pose (PnP vs the canonical face, focal estimate, smoothing), pose-free 3D landmarks,
    blink, mouth openness, motion codes and crop boxes."""
    from avatar.data import MotionSpace

    from .crop import crop_boxes
    from .rig import fuse_rig_poses
    from .tracking import track

    cfg = ctx.cfg
    streams = _streams(ctx)
    results = {}
    info = {"streams": {}}
    for st in streams:
        cam = st["camera_id"]
        L = _landmarks(ctx, cam)
        size = tuple(st["work_size"])
        focal = None
        if cfg.focal is not None and st["K"] is None:
            focal = cfg.focal * size[0] / st["sources"][0]["display_size"][0]
        r = track(L["landmarks2d"], L["valid"], size, focal=focal,
                  K=np.asarray(st["K"]) if st["K"] is not None else None,
                  smooth_sigma=cfg.pose_smooth_sigma, blink_closed_ratio=cfg.blink_closed_ratio)
        if r.get("focal_warning"):
            ctx.warn(f"camera {cam}: {r['focal_warning']}")
        r["valid"] = L["valid"]
        r["landmarks2d"] = L["landmarks2d"]
        results[cam] = r
        info["streams"][str(cam)] = {"focal_work_px": round(r["focal"], 3),
                                     "pnp_rms_px": round(float(np.nanmean(r["rms"])), 4)}
    if ctx.rig and len(streams) > 1:
        T = min(len(results[c]["valid"]) for c in results)
        cams = sorted(results)
        hp = np.stack([results[c]["head_pose"][:T] for c in cams])
        va = np.stack([results[c]["valid"][:T] for c in cams])
        c2w = np.stack([np.asarray(streams[c]["c2w_rig"]) for c in cams])
        fused, _, scale = fuse_rig_poses(hp, va, c2w)
        for k, c in enumerate(cams):
            results[c]["head_pose"][:T] = fused[k]
        info["rig_units_per_metre"] = scale
    # one neutral and one motion space for the person (all cameras' frames)
    ms = MotionSpace()
    lm3_all = np.concatenate([r["landmarks3d"][r["valid"]] for r in results.values()])
    mo_all = np.concatenate([r["mouth_open"][r["valid"]] for r in results.values()])
    bl_all = np.concatenate([r["blink"][r["valid"]] for r in results.values()])
    neutral = ms.estimate_neutral(lm3_all, mo_all, bl_all)
    for st in streams:
        cam = st["camera_id"]
        r = results[cam]
        motion = ms.encode(r["landmarks3d"], neutral)
        boxes = crop_boxes(r["landmarks2d"], r["valid"], tuple(st["work_size"]), mode=cfg.crop_mode,
                           scale=cfg.crop_scale, fps=cfg.fps, smooth_s=cfg.crop_smooth_s)
        _save_npz(ctx.work / f"tracking_c{cam}.npz", K=r["K"], head_pose=r["head_pose"],
                  landmarks3d=r["landmarks3d"], blink=r["blink"], mouth_open=r["mouth_open"], motion=motion,
                  rms=r["rms"], boxes=boxes, neutral=neutral)
        info["streams"][str(cam)]["box_side_px"] = int(np.median(boxes[:, 2]))
    info["motion_space"] = ms.to_dict()
    return info


# ------------------------------------------------------------------------------------------ masks
def stage_masks(ctx: Context) -> Dict:
    """Person segmentation + landmark polygons -> label masks at the working size (tracked frames)."""
    from .masks import PersonSegmenter, label_mask

    cfg = ctx.cfg
    if (ctx.work / "masks").exists():
        shutil.rmtree(ctx.work / "masks")
    out = {}
    for st in _streams(ctx):
        cam = st["camera_id"]
        L = _landmarks(ctx, cam)
        idx = np.flatnonzero(L["valid"])
        (ctx.work / "masks" / f"c{cam}").mkdir(parents=True)
        fg = np.zeros(len(idx))
        frames = _store(ctx, cam)

        def work(chunk, cam=cam, L=L, frames=frames):
            seg = PersonSegmenter()   # one model instance per thread
            try:
                for k in chunk:
                    n = int(idx[k])
                    person = seg(frames.read(n)) > cfg.seg_threshold
                    fg[k] = person.mean()
                    _write_img(_mask_path(ctx, cam, n), label_mask(person, L["landmarks2d"][n]), "png")
            finally:
                seg.close()

        _run_chunks(work, _chunks(np.arange(len(idx)), cfg.threads))
        out[str(cam)] = {"frames": int(len(idx)), "mean_person_fraction": round(float(np.mean(fg)), 4)}
    return {"streams": out}


def _read_mask(path: Path) -> np.ndarray:
    import cv2

    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None:
        raise CaptureError(f"{path}: missing/unreadable mask (rerun with --from masks)")
    return m


# ------------------------------------------------------------------------------------- background
def stage_background(ctx: Context) -> Dict:
    """Background plate per camera (working size) from up to background_frames tracked frames."""
    from .background import background_plate

    cfg = ctx.cfg
    out = {}
    for st in _streams(ctx):
        cam = st["camera_id"]
        idx = np.flatnonzero(_landmarks(ctx, cam)["valid"])
        k = min(len(idx), max(1, cfg.background_frames))
        pick = idx[np.linspace(0, len(idx) - 1, k).round().astype(int)]
        frames = _store(ctx, cam)
        pairs = ((frames.read(int(n)), _read_mask(_mask_path(ctx, cam, int(n)))) for n in pick)
        plate, holes = background_plate(pairs)
        _write_img(ctx.work / f"background_c{cam}.png", plate, "png")
        out[str(cam)] = {"frames_used": int(k), "inpainted_fraction": round(holes, 4)}
    return {"streams": out}


# ------------------------------------------------------------------------------------------ split
def stage_split(ctx: Context) -> Dict:
    """Dataset frame order (time, then camera) and the train/test split: the last holdout_fraction
    of the tracked times is held out."""
    cfg = ctx.cfg
    entries = []
    for st in _streams(ctx):
        cam = st["camera_id"]
        for n in np.flatnonzero(_landmarks(ctx, cam)["valid"]):
            entries.append((int(n), cam))
    entries.sort()
    times = sorted({t for t, _ in entries})
    n_test = int(round(len(times) * cfg.holdout_fraction))
    if len(times) >= 2:
        n_test = min(max(n_test, 1 if cfg.holdout_fraction > 0 else 0), len(times) - 1)
    test_times = set(times[len(times) - n_test:]) if n_test else set()
    train = [i for i, (t, _) in enumerate(entries) if t not in test_times]
    test = [i for i, (t, _) in enumerate(entries) if t in test_times]
    atomic_write_json(ctx.work / "split.json", {"entries": entries, "train": train, "test": test})
    return {"frames": len(entries), "train": len(train), "test": len(test)}


# ------------------------------------------------------------------------------------------ write
def stage_write(ctx: Context) -> Dict:
    """Crop, resize and write the dataset through avatar.data.CaptureWriter; then the report."""
    from avatar.data import CaptureWriter
    from avatar.data.wavio import read_wav

    from .crop import crop_image, crop_K, crop_points

    cfg = ctx.cfg
    split = json.loads((ctx.work / "split.json").read_text())
    entries = [tuple(e) for e in split["entries"]]
    streams = _streams(ctx)
    T = {st["camera_id"]: _npz(ctx.work / f"tracking_c{st['camera_id']}.npz", "tracking") for st in streams}
    L = {st["camera_id"]: _landmarks(ctx, st["camera_id"]) for st in streams}
    stores = {st["camera_id"]: _store(ctx, st["camera_id"]) for st in streams}
    S = cfg.size
    tracks = {k: [] for k in ("landmarks2d", "landmarks3d", "motion", "blink", "mouth_open", "head_pose")}

    def load(e):
        n, cam = e
        box = T[cam]["boxes"][n]
        img = crop_image(stores[cam].read(n), box, S)
        mask = crop_image(_read_mask(_mask_path(ctx, cam, n)), box, S, nearest=True)
        return img, mask

    w = CaptureWriter(ctx.out, fps=cfg.fps, image_ext=cfg.image_format, png_compression=cfg.png_compression,
                      jpeg_quality=cfg.jpeg_quality, num_threads=max(1, cfg.threads), owned=ctx.owned)
    with ThreadPoolExecutor(max(1, cfg.threads)) as pool:
        for (n, cam), (img, mask) in zip(entries, pool.map(load, entries)):
            t = T[cam]
            box = t["boxes"][n]
            w.add_frame(img, mask, crop_K(t["K"], box, S), t["head_pose"][n], time=n, camera_id=cam)
            tracks["landmarks2d"].append(crop_points(L[cam]["landmarks2d"][n], box, S))
            for k in ("landmarks3d", "motion", "blink", "mouth_open", "head_pose"):
                tracks[k].append(t[k][n])
    cam0 = streams[0]["camera_id"]
    box0 = T[cam0]["boxes"][[n for n, c in entries if c == cam0][0]]
    bg = read_rgb(ctx.work / f"background_c{cam0}.png")
    w.write_background(crop_image(bg, box0, S))
    if (ctx.work / "audio.wav").is_file() and ctx.stage_info("audio").get("has_audio"):
        wav, sr = read_wav(ctx.work / "audio.wav")
        w.write_audio(wav, sr)
    w.write_tracks(**{k: np.stack(v) for k, v in tracks.items()}, neutral=T[cam0]["neutral"])
    w.set_split(split["train"], split["test"])
    cams = [{"id": st["camera_id"], "name": st["name"]} for st in streams]
    probe_info = ctx.stage_info("probe")
    w.close(motion_space=ctx.stage_info("tracking")["motion_space"], cameras=cams,
            extra={"capture": {"inputs": [str(p) for p in ctx.inputs], "rig": str(ctx.rig) if ctx.rig else None,
                               "crop_mode": cfg.crop_mode,
                               "sources": [s for st in probe_info["streams"] for s in st["sources"]]}})
    info = {"frames": len(entries), "size": S}
    if cfg.report:
        from .report import write_report

        info["report"] = write_report(ctx)
    return info
