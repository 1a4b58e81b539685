"""`avatar bench drive` -> benchmarks/results/drive.json: how fast the driven avatar renders, and how
long a live stream waits for its frames.

* fps_mono_256, fps_stereo_256 (pairs/s), fps_mono_512: frames per second of `avatar drive`'s
  pipeline end to end — audio features, audio encoder, deformation of every Gaussian, rasterize,
  compositing — not just the rasterizer (the anchors' FPS excludes audio encoding).
* latency_ms_p50 / _p95: "audio chunk in -> frame out", through the real WebSocket server
  (in-process, 127.0.0.1), the client sending 40 ms PCM16 chunks in real time: per frame, arrival
  time minus the send time of the chunk that completed the audio the frame needs (its own 40 ms
  plus the model's look-ahead). The algorithmic part (look-ahead + chunking) is reported apart.
  Measured in the server's realtime mode (what the live page uses): when rendering is slower than
  real time, frames are skipped to keep latency bounded — `latency_skipped_fraction` says how
  many. `latency_ms_p50_every_frame` is the same stream with every frame rendered (latency then
  grows with the stream when rendering is slower than real time).
* On a CUDA device also gpu_fps_mono_512, gpu_fps_stereo_512, gpu_latency_ms_p50.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from avatar.audio.timeline import SAMPLE_RATE
from avatar.io.atomic import atomic_write_json
from avatar.commands.bench.machine import device, load_average, versions


@dataclass
class BenchDrive:
    """Benchmark driving: frames/s (audio encoder + deformation + render) and streaming latency."""

    ckpt: Optional[Path] = None
    """Avatar checkpoint to measure; default: a model of the default config (4000 Gaussians),
    initialised on the canonical face (same compute as a trained one of that size)."""
    audio: Optional[Path] = None
    """Speech audio (default ../shared/media/audio/librispeech_198-209-0000_F.ogg, else a synthetic signal)."""
    seconds: float = 2.0
    """Seconds of audio per throughput case."""
    latency_seconds: float = 4.0
    """Seconds of audio streamed in real time for the latency case."""
    latency_size: int = 256
    """Frame size of the latency case."""
    backend: str = "auto"
    """Rasterizer backend."""
    threads: Optional[int] = None
    """torch intra-op threads (default: torch's choice). On a CPU shared with other jobs, 1 avoids
    oversubscription (measured here: 5-50x slower small ops with 2 threads under load 9 on 2 cores)."""
    out: Path = Path("benchmarks/results/drive.json")
    """Where the JSON goes."""

    def main(self) -> int:
        res = run_bench(self)
        print(json.dumps(res["summary"], indent=2))
        print(f"wrote {self.out}")
        return 0



def default_checkpoint(path: Path) -> Path:
    """The default-config model initialised on the canonical face, saved as a checkpoint."""
    from avatar.audio.features import AudioFeatureConfig
    from avatar.data.face_model import CANONICAL
    from avatar.model.avatar import AvatarModel
    from avatar.model.config import ModelConfig
    from avatar.model.gaussians import init_gaussians

    cfg = ModelConfig()
    cfg.audio.causal = True
    model = AvatarModel(cfg, init_gaussians(cfg.gaussians, CANONICAL), AudioFeatureConfig().to_dict())
    model.save(path, meta={"fps": 25.0, "note": "bench: default config, untrained weights"})
    return path


def _audio(self: BenchDrive):
    import numpy as np

    from avatar.media.audio import load_audio

    p = self.audio
    if p is None:
        cand = Path(__file__).resolve().parents[2].parent / "shared" / "media" / "audio" / "librispeech_198-209-0000_F.ogg"
        p = cand if cand.is_file() else None
    if p is not None:
        return load_audio(p), str(p)
    t = np.arange(SAMPLE_RATE * 20) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32), "synthetic"


def _throughput(avatar, wav, size: int, stereo: bool, backend: str, seconds: float) -> Dict[str, Any]:
    from avatar.runtime.sources import AvatarSource
    from avatar.runtime.view import ViewConfig

    src = AvatarSource(avatar, ViewConfig(size, size, stereo, backend=backend), streaming=False, batch=4)
    src.push_audio(wav[:8000])  # warm-up: caches, allocator, backend load
    src.flush()
    src.reset()
    seg = wav[: int(seconds * SAMPLE_RATE)]
    t0 = time.perf_counter()
    n = len(src.push_audio(seg)) + len(src.flush())
    dt = time.perf_counter() - t0
    return {"size": size, "stereo": stereo, "frames": n, "seconds": dt, "fps": n / dt}


def _breakdown(avatar, wav, size: int, backend: str, frames: int = 20) -> Dict[str, Any]:
    """Milliseconds per frame of each stage (mono), to see where the time goes."""
    import numpy as np
    import torch

    from avatar.audio.features import feature_windows
    from avatar.audio.stream import StreamingMelFeatures
    from avatar.runtime.camera_path import FixedPose
    from avatar.runtime.sources import audio_feature_config
    from avatar.runtime.view import ViewConfig, cameras_for

    m = avatar.model
    seg = wav[: int(frames / avatar.fps * SAMPLE_RATE) + 1]
    t0 = time.perf_counter()
    s = StreamingMelFeatures(avatar.fps, audio_feature_config(m))
    rows = s.push(seg) + s.finish()
    t_feat = time.perf_counter() - t0
    wins = feature_windows(torch.from_numpy(np.stack(rows)), m.window)  # [F, 2k+1, D]
    V, K = cameras_for(FixedPose(avatar.camera()), 0, ViewConfig(size, size))
    V, K = torch.from_numpy(V), torch.from_numpy(K)
    n = min(frames, len(wins))
    t_enc = t_def = t_ren = 0.0
    with torch.no_grad():
        m.render_frame(V, K, size, size, audio_window=wins[0], backend=backend)  # warm-up
        for t in range(n):
            a = time.perf_counter()
            z = m.encode_audio(wins[t])
            b = time.perf_counter()
            m.deformed(z, None, torch.tensor(0.0))
            c = time.perf_counter()
            m.render_frame(V, K, size, size, audio_latent=z, backend=backend)  # deformation + rasterize
            d = time.perf_counter()
            t_enc, t_def, t_ren = t_enc + b - a, t_def + c - b, t_ren + d - c
    return {"size": size, "frames": n, "features_ms": 1000 * t_feat / n, "audio_encoder_ms": 1000 * t_enc / n,
            "deformation_ms": 1000 * t_def / n, "render_frame_ms (deformation + rasterize)": 1000 * t_ren / n}


def _latency(avatar, wav, size: int, backend: str, seconds: float, live: bool = True) -> Dict[str, Any]:
    import asyncio

    import numpy as np

    from avatar.runtime.client import stream_audio
    from avatar.runtime.server import AvatarServer, ServerConfig
    from avatar.runtime.sources import AvatarSource
    from avatar.runtime.view import ViewConfig

    def factory(stereo):
        return AvatarSource(avatar, ViewConfig(size, size, stereo, backend=backend), streaming=True)

    seg = wav[: int(seconds * SAMPLE_RATE)]

    async def go():
        server = await AvatarServer(factory, ServerConfig()).start("127.0.0.1", 0)
        try:
            uri = f"ws://127.0.0.1:{server.port}/ws"
            await stream_audio(uri, seg[:3200], SAMPLE_RATE)  # warm-up
            t0 = time.perf_counter()
            res = await stream_audio(uri, seg, SAMPLE_RATE, chunk_ms=40, realtime=True, live=live, timeout=600)
            return res, time.perf_counter() - t0
        finally:
            await server.close()
    res, wall = asyncio.run(go())
    lat = res.latencies_ms()
    la = res.ready["lookahead_frames"]
    fps = res.ready["fps"]
    return {"size": size, "live": live, "frames": len(res.frames), "skipped": len(res.skipped),
            "skipped_fraction": len(res.skipped) / max(1, len(res.frames) + len(res.skipped)),
            "chunk_ms": 40, "lookahead_frames": la,
            "algorithmic_latency_ms": 1000.0 * (1 + la) / fps,
            "latency_ms_p50": float(np.percentile(lat, 50)), "latency_ms_p95": float(np.percentile(lat, 95)),
            "latency_ms_max": float(lat.max()), "server_ms_p50": float(np.percentile(res.server_ms, 50)),
            "stream_wall_s": wall, "audio_s": len(seg) / SAMPLE_RATE, "realtime_factor": (len(seg) / SAMPLE_RATE) / wall}


def run_bench(self: BenchDrive) -> Dict[str, Any]:
    import torch

    if self.threads is not None:
        torch.set_num_threads(int(self.threads))
    load_before = load_average()

    from avatar.ops import backends
    from avatar.runtime.sources import load_avatar

    wav, audio_name = _audio(self)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = self.ckpt or default_checkpoint(Path(tmp) / "bench.pt")
        avatar = load_avatar(ckpt)
        n_gauss = len(avatar.model.gaussians)
        cases = {
            "mono_256": _throughput(avatar, wav, 256, False, self.backend, self.seconds),
            "stereo_256": _throughput(avatar, wav, 256, True, self.backend, self.seconds),
            "mono_512": _throughput(avatar, wav, 512, False, self.backend, self.seconds / 2),
            "breakdown_256": _breakdown(avatar, wav, 256, self.backend),
            "latency": _latency(avatar, wav, self.latency_size, self.backend, self.latency_seconds, live=True),
            "latency_every_frame": _latency(avatar, wav, self.latency_size, self.backend,
                                            self.latency_seconds / 2, live=False),
        }
        gpu: Dict[str, Any] = {}
        if torch.cuda.is_available():
            g = load_avatar(ckpt, "cuda")
            gpu["gpu_mono_512"] = _throughput(g, wav, 512, False, self.backend, self.seconds * 4)
            gpu["gpu_stereo_512"] = _throughput(g, wav, 512, True, self.backend, self.seconds * 4)
            gpu["gpu_latency"] = _latency(g, wav, 512, self.backend, self.latency_seconds)
    used = {k: v[0] for k, v in backends().items()}
    one = [torch.zeros(1, 3), torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.01), torch.ones(1),
           torch.ones(1, 3), torch.eye(4)[None].clone(), torch.tensor([[[100.0, 0, 8], [0, 100, 8], [0, 0, 1]]])]
    one[5][0, 2, 3] = 1.0
    from avatar.ops import rasterize

    resolved = rasterize(*one, 16, 16, backend=self.backend)[2]["backend"]
    summary = {
        "fps_mono_256": round(cases["mono_256"]["fps"], 2),
        "fps_stereo_256": round(cases["stereo_256"]["fps"], 2),
        "fps_mono_512": round(cases["mono_512"]["fps"], 2),
        "latency_ms_p50": round(cases["latency"]["latency_ms_p50"], 1),
        "latency_ms_p95": round(cases["latency"]["latency_ms_p95"], 1),
        "latency_skipped_fraction": round(cases["latency"]["skipped_fraction"], 3),
        "latency_ms_p50_every_frame": round(cases["latency_every_frame"]["latency_ms_p50"], 1),
        "algorithmic_latency_ms": round(cases["latency"]["algorithmic_latency_ms"], 1),
    }
    if gpu:
        summary.update({"gpu_fps_mono_512": round(gpu["gpu_mono_512"]["fps"], 1),
                        "gpu_fps_stereo_512": round(gpu["gpu_stereo_512"]["fps"], 1),
                        "gpu_latency_ms_p50": round(gpu["gpu_latency"]["latency_ms_p50"], 1)})
    res = {
        "device": dict(device("cuda" if gpu else "cpu"), load_average_at_start=load_before),
        "versions": versions("websockets"),
        "backend": {"requested": self.backend, "used": resolved, "available": used},
        "settings": {"checkpoint": str(self.ckpt) if self.ckpt else "default config, untrained weights",
                     "gaussians": n_gauss, "audio": audio_name, "seconds": self.seconds,
                     "latency_seconds": self.latency_seconds, "fps": avatar.fps,
                     "causal": bool(avatar.model.cfg.audio.causal), "window": avatar.model.window},
        "cases": {**cases, **gpu},
        "summary": summary,
    }
    out = Path(self.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, res, indent=2)
    return res
