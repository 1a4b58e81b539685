"""`avatar bench lipsync`: lip sync on REAL people, measured by avatar.eval on the rendered frames.

Writes benchmarks/results/lipsync.json (+ lipsync/ with eval.md, contact sheets, mouth-opening plots)
and benchmarks/results/eval_protocol.json (+ eval_protocol.md): the field's protocol on one real clip.

* Prior (person-agnostic, the shipped one by default) on the held-out identities of the split file,
  audio of their own clips: avatar.prior.evaluate.evaluate_prior -> prior_unseen_* and the mean-motion /
  audio-energy baselines (baseline_mean_*, baseline_energy_*).
* Per-identity avatar: `person_clip` (a held-out identity) captured, trained with the CPU preset on its
  first 10/11, and its last 1/11 rendered self-driven (avatar.runtime.heldout.render_capture):
  with the tracked codes (person_tracked_*), and from audio only through the prior the avatar recorded
  (person_audio_*: the preset fine-tunes the shipped prior on the training frames) and through the
  generic prior (person_audio_generic_*), each scored against the real frames (landmarks detected on
  both by mediapipe).
* Personal fine-tuning of the prior alone on the held-out clips of at least `personal_min_seconds`
  (avatar.prior.evaluate.evaluate_personal): prior_{generic,finetuned}_long_heldout_*.
* Cross-driven: the same avatar driven by unheard speech in several languages (`avatar drive`), the
  rendered mouth's amplitude against the person's own real amplitude and its speech/silence contrast
  against the person's own (cross_lang_*).
* eval_protocol.json: the tracked renders scored as `avatar eval` does, and the same renders scored
  against the ground truth shifted by one frame (a sanity reference: shifted_*).
Every step's output is kept under `work` and reused by a rerun.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from avatar.commands.train import mediapipe_detector
from avatar.commands.bench.machine import device, versions

REPO = Path(__file__).resolve().parents[3]
MEDIA = Path(os.environ.get("AVATAR_MEDIA", REPO.parent / "shared" / "media"))

GOALS = {
    "prior_unseen_mouth_open_corr": ">= 0.3 (goal 0.6) and >= baseline_energy + 0.1",
    "prior_unseen_amplitude_ratio": "0.7 - 1.3",
    "prior_unseen_speech_silence_rel": ">= 0.8",
    "person_tracked_mouth_open_corr": ">= 0.8",
    "person_audio_mouth_open_corr": ">= 0.4 (goal 0.7)",
    "person_audio_amplitude_ratio": "0.7 - 1.3",
    "person_heldout_psnr": "no worse than the audio-only model of before (tiny preset)",
    "cross_lang_speech_silence_rel_min": ">= 0.8",
    "cross_lang_amplitude_ratio_min": ">= 0.7",
    "cross_lang_amplitude_ratio_max": "<= 1.3",
    "cpu_preset_train_minutes": "<= 20 (2 cores)",
    "shipped_prior_mb": "<= 20",
}


@dataclass
class BenchLipsync:
    """Lip sync on real people: the prior on unseen identities, a per-identity CPU-preset avatar, unheard languages."""

    out: Path = Path("benchmarks/results/lipsync.json")
    """Result JSON (contact sheets and plots go to a folder of the same name next to it)."""
    eval_out: Path = Path("benchmarks/results/eval_protocol.json")
    """The field's evaluation protocol on `person_clip` (and its markdown table next to it)."""
    work: Path = Path("outputs/bench_lipsync")
    """Working folder: captures, the trained avatar, renders (reused by a rerun)."""
    split: Path = REPO / "benchmarks" / "lipsync_split.json"
    """Identity split of the pool (held-out identities are never in the prior's training data)."""
    pool: Path = MEDIA / "pool"
    """The real clips (MANIFEST.tsv)."""
    captures: Optional[Path] = None
    """Folder with existing capture folders named by clip stem (default: work/captures; missing ones are captured)."""
    person_clip: str = "dfrf_cnn_anchor_71s"
    """Pool clip (a held-out identity) of the per-identity avatar."""
    preset: str = "cpu"
    """Training preset of the per-identity avatar."""
    prior: Optional[Path] = None
    """Motion prior (default: the one shipped in the package)."""
    languages: Tuple[str, ...] = ("voxpopuli_en_000.ogg", "fleurs_de_000.ogg", "fleurs_fr_000.ogg",
                                  "fleurs_es_000.ogg")
    """Unheard speech under MEDIA/audio driving the avatar (English, German, French, Spanish)."""
    cross_seconds: float = 20.0
    """Drive with at most this many seconds of each language's clip (0 = all of it)."""
    personal_min_seconds: float = 20.0
    """Held-out clips at least this long also measure personal fine-tuning of the prior
    (avatar.prior.evaluate.evaluate_personal: first 10/11 fine-tunes, last 1/11 scores)."""
    skip_prior_eval: bool = False
    """Do not evaluate the prior on the held-out identities (reuse work/prior_eval.json when present)."""

    def main(self) -> int:
        res = run_bench(self)
        print(json.dumps(res["summary"], indent=2))
        print(f"wrote {self.out} and {self.eval_out}")
        return 0


def _capture(b: BenchLipsync, stem: str) -> Path:
    from capture.pipeline import capture

    root = Path(b.captures) if b.captures else Path(b.work) / "captures"
    out = root / stem
    if (out / "transforms.json").is_file():
        return out
    src = Path(b.pool) / f"{stem}.mp4"
    if not src.is_file():
        raise FileNotFoundError(f"{src}: pool clip not found (set AVATAR_MEDIA or --pool)")
    print(f"[bench lipsync] capturing {src} -> {out}", flush=True)
    capture([src], out, log=lambda m: None)
    return out


def _train_person(b: BenchLipsync, cap: Path) -> Tuple[Path, Optional[float]]:
    from avatar.train.trainer import train

    run = Path(b.work) / f"avatar_{b.preset}"
    ckpt = run / "avatar.pt"
    minutes_file = run / "train_minutes.json"
    if ckpt.is_file():
        m = json.loads(minutes_file.read_text())["minutes"] if minutes_file.is_file() else None
        return ckpt, m
    t0 = time.perf_counter()
    train(cap, run, b.preset, progress=True, make_detector=mediapipe_detector)
    minutes = (time.perf_counter() - t0) / 60.0
    minutes_file.write_text(json.dumps({"minutes": minutes}))
    return ckpt, minutes


def _score_person(avatar, ds, idx, motion: str, prior, make_det, ref=None):
    from avatar.eval.protocol import analyse_reference, score_frames
    from avatar.runtime.heldout import render_capture

    r = render_capture(avatar, ds, idx, motion=motion, prior=prior)
    if ref is None:
        ref = analyse_reference(r["gt"], ds.fps, make_det, audio=_segment(ds, idx), face_masks=r["masks"])
    T = len(idx)
    keep = sorted({0, T // 4, T // 2, 3 * T // 4, T - 1})
    res = score_frames(r["pred"], ref, make_det, timing={"fps": r["fps"], "latency_ms": r["latency_ms"]}, keep=keep)
    return r, ref, res


def _segment(ds, idx) -> Optional[np.ndarray]:
    from avatar.audio.timeline import contiguous_audio

    return contiguous_audio(ds.audio, ds.fps, idx, ds.audio_sample(int(idx[0])))


def _cross_language(b: BenchLipsync, ckpt: Path, make_det, person_ref) -> Dict[str, Dict]:
    from avatar.commands.drive import Drive
    from avatar.eval.protocol import score_frames
    from avatar.audio.timeline import SAMPLE_RATE
    from avatar.media.audio import load_audio, save_wav
    from avatar.media.video import read_frames

    real_std = float(np.nanstd(person_ref.opening))
    real_ssr = person_ref.result["summary"].get("speech_silence_ratio")
    out = {}
    for name in b.languages:
        wav_path = MEDIA / "audio" / name
        if not wav_path.is_file():
            out[name] = {"skipped": f"{wav_path} not found"}
            continue
        mp4 = Path(b.work) / "cross" / f"{Path(name).stem}.mp4"
        wav = load_audio(wav_path)
        if b.cross_seconds > 0:
            wav = wav[:int(b.cross_seconds * SAMPLE_RATE)]
        if not mp4.is_file():
            mp4.parent.mkdir(parents=True, exist_ok=True)
            cut = mp4.with_suffix(".wav")
            save_wav(cut, wav)
            Drive(str(ckpt), cut, out=mp4).run()   # the avatar's recorded (personalised) prior
        frames = np.stack(list(read_frames(mp4)))
        res = score_frames(frames, None, make_det, fps=25.0, audio=wav)
        op = np.asarray([np.nan if v is None else v for v in res["per_frame"]["mouth_opening"]], np.float64)
        ssr = res["summary"].get("speech_silence_ratio")
        out[name] = {"frames": len(frames), "amplitude_ratio": float(np.nanstd(op)) / max(real_std, 1e-9),
                     "speech_silence_ratio": ssr,
                     "speech_silence_rel": (ssr / real_ssr) if (ssr is not None and real_ssr) else None,
                     "envelope_corr": res["summary"].get("envelope_corr")}
    return out


def _shifted(ref, k: int = 1):
    """The reference with its frames shifted by k (frame i compared with real frame i + k)."""
    from avatar.eval.protocol import Reference

    n = len(ref.frames)
    order = np.minimum(np.arange(n) + k, n - 1)
    masks = None if ref.face_masks is None else [ref.face_masks[i] for i in order]
    return Reference([ref.frames[i] for i in order], ref.fps, ref.landmarks[order], ref.opening[order], masks,
                     ref.audio, ref.voiced, ref.vad_backend, ref.result)


def run_bench(b: BenchLipsync) -> Dict:
    from avatar.data import load_capture
    from avatar.eval.report import write_json, write_report
    from avatar.prior.api import default_prior
    from avatar.runtime.sources import load_avatar, recorded_prior

    work = Path(b.work)
    work.mkdir(parents=True, exist_ok=True)
    split = json.loads(Path(b.split).read_text())
    prior = Path(b.prior) if b.prior else default_prior()
    heldout = [stem for stem, c in split["clips"].items() if c["split"] == "heldout"]
    if b.person_clip not in heldout:
        raise ValueError(f"--person-clip {b.person_clip}: not a held-out identity of {b.split}")
    summary: Dict[str, Any] = {}
    # 1. the prior on unseen identities
    pe_path = work / "prior_eval.json"
    if not (b.skip_prior_eval and pe_path.is_file()):
        from avatar.prior.evaluate import evaluate_prior

        caps = [_capture(b, s) for s in heldout]
        write_json(pe_path, evaluate_prior(prior, caps))
    prior_eval = json.loads(pe_path.read_text())
    summary.update({k: v for k, v in prior_eval.get("summary", prior_eval).items() if not isinstance(v, (dict, list))})
    summary["shipped_prior_mb"] = round(prior.stat().st_size / 2 ** 20, 2)
    # 1b. personal fine-tuning of the prior on the held-out identities with long enough clips
    pp_path = work / "prior_personal.json"
    if not pp_path.is_file():
        from avatar.prior.evaluate import evaluate_personal

        long = [s for s in heldout if split["clips"][s].get("duration_s", 0) >= b.personal_min_seconds]
        write_json(pp_path, {s: evaluate_personal(prior, _capture(b, s), out_dir=work / "prior_personal")
                             for s in long})
    personal = json.loads(pp_path.read_text())
    for k in ("generic", "finetuned"):
        for f in ("mouth_open_corr", "mouth_amplitude_ratio", "speech_silence_rel"):
            v = [c[k][f] for c in personal.values() if c[k].get(f) is not None]
            summary[f"prior_{k}_long_heldout_{f}"] = float(np.mean(v)) if v else None
    prior_eval["personal"] = personal
    # 2. the per-identity avatar
    cap = _capture(b, b.person_clip)
    ckpt, minutes = _train_person(b, cap)
    summary["cpu_preset_train_minutes"] = minutes
    ds = load_capture(cap)
    idx = np.asarray(ds.split["test"], np.int64)
    avatar = load_avatar(ckpt)
    make_det = mediapipe_detector
    r_tr, ref, tracked = _score_person(avatar, ds, idx, "tracked", prior, make_det)
    # audio only: the prior the avatar recorded (the preset's personalised one, fine-tuned on the training
    # frames), and the generic prior for comparison
    _, _, audio_only = _score_person(avatar, ds, idx, "prior", None, make_det, ref)
    _, _, audio_generic = _score_person(avatar, ds, idx, "prior", prior, make_det, ref)
    st, sa, sg = tracked["summary"], audio_only["summary"], audio_generic["summary"]
    summary.update(person_tracked_mouth_open_corr=st["mouth_open_corr"],
                   person_tracked_amplitude_ratio=st["mouth_amplitude_ratio"],
                   person_audio_mouth_open_corr=sa["mouth_open_corr"],
                   person_audio_amplitude_ratio=sa["mouth_amplitude_ratio"],
                   person_heldout_psnr=st["psnr"], person_audio_heldout_psnr=sa["psnr"],
                   person_audio_generic_mouth_open_corr=sg["mouth_open_corr"],
                   person_audio_generic_amplitude_ratio=sg["mouth_amplitude_ratio"],
                   person_audio_prior=str(recorded_prior(avatar)))
    report = {"methods": {"tracked codes": tracked, "audio only (personalised prior)": audio_only,
                          "audio only (generic prior)": audio_generic}, "reference": ref.result,
              "meta": {"capture": str(cap), "split": "test", "frames": len(idx), "fps": ds.fps,
                       "size": [r_tr["view"].width, r_tr["view"].height], "detector": "mediapipe"}}
    files = write_report(Path(b.out).with_suffix(""), report)
    # 3. unheard languages
    cross = _cross_language(b, ckpt, make_det, ref)
    amps = [c["amplitude_ratio"] for c in cross.values() if "amplitude_ratio" in c]
    rels = [c["speech_silence_rel"] for c in cross.values() if c.get("speech_silence_rel") is not None]
    summary.update(cross_lang_amplitude_ratio_min=min(amps) if amps else None,
                   cross_lang_amplitude_ratio_max=max(amps) if amps else None,
                   cross_lang_speech_silence_rel_min=min(rels) if rels else None)
    env = {"device": device(), "versions": versions("cv2", "mediapipe")}
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(b).items()}
    res = {"benchmark": "lipsync", **env, "settings": dict(settings, prior=str(prior)),
           "identity_split": {"heldout": split["heldout_identities"], "train": split["train_identities"]},
           "summary": summary, "goals": GOALS, "prior_eval": prior_eval, "cross_language": cross,
           "person": {"clip": b.person_clip, "checkpoint": str(ckpt), "tracked": tracked["summary"],
                      "audio_only": audio_only["summary"], "audio_only_generic": audio_generic["summary"],
                      "reference": ref.result["summary"]},
           "files": {k: str(v) for k, v in files.items()}}
    write_json(Path(b.out), res)
    # 4. the field's protocol on the same renders, and the one-frame-shifted ground truth as a sanity check
    from avatar.eval.protocol import score_frames

    shifted = score_frames(r_tr["pred"], _shifted(ref), make_det, timing={"fps": r_tr["fps"],
                                                                          "latency_ms": r_tr["latency_ms"]})
    keys = ("psnr", "ssim", "lpips", "lmd", "lmd_iod", "mouth_open_corr", "mouth_amplitude_ratio",
            "speech_silence_ratio")
    ev = {"benchmark": "eval_protocol", **env, "settings": dict(settings, prior=str(prior)),
          "summary": {**{k: st.get(k) for k in keys}, **{f"shifted_{k}": shifted["summary"].get(k) for k in keys}},
          "notes": {**tracked["notes"], **{f"shifted_{k}": v for k, v in shifted["notes"].items()}},
          "protocol": "held-out last 1/11 of the frames, self-driven (own audio, tracked pose and codes); "
                      "landmarks by mediapipe on the renders and the real frames; shifted_* = the same renders "
                      "against the real frames shifted by one frame"}
    write_json(Path(b.eval_out), ev)
    rows = ["| metric | ours (tracked) | vs GT shifted by 1 frame |", "|---|---|---|"]
    rows += [f"| {k} | {_f(ev['summary'][k])} | {_f(ev['summary']['shifted_' + k])} |" for k in keys]
    Path(b.eval_out).with_suffix(".md").write_text(
        f"# Evaluation protocol on {b.person_clip} ({b.preset} preset)\n\n" + "\n".join(rows) + "\n")
    return res


def _f(v) -> str:
    return "null" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))
