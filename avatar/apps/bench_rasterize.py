"""`avatar bench rasterize` -> benchmarks/results/rasterize.json.

Times avatar.ops.rasterize per backend x Gaussian count x resolution on a synthetic head-sized
scene (Gaussians in a 0.1 m ellipsoid, log-normal scales around `scale` metres, SH degree 3, one
camera at 0.6 m with a ~45 degree field of view): forward ms and forward+backward ms (median of
`repeats` runs after a warm-up; the backward pushes a fixed random gradient on colours and
alphas), and peak memory. CPU memory = peak resident set size during the call minus the RSS just
before it, sampled from /proc/self/statm every 2 ms (tracemalloc cannot see torch's allocator);
GPU memory = torch.cuda.max_memory_allocated() during the call minus the allocation before it.

summary.cpu_vs_torch_speedup_fwd_bwd = torch fwd+bwd time / cpu fwd+bwd time at the `summary_n`
Gaussians and `summary_res` pixels square, measured in this run. summary.cuda_vs_gsplat_time_ratio
(fwd+bwd, our cuda time / gsplat time, worst over the GPU cases) only when a GPU is present.
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple


@dataclass
class BenchRasterize:
    """Benchmark the rasterizer backends (forward, forward+backward, peak memory)."""

    out: Path = Path("benchmarks/results/rasterize.json")
    """Result JSON (written atomically)."""
    cpu_cases: Tuple[Tuple[int, int], ...] = ((5000, 128), (20000, 128), (20000, 256), (50000, 256))
    """(Gaussians, square resolution) timed on the cpu backend."""
    torch_cases: Tuple[Tuple[int, int], ...] = ((5000, 128), (20000, 256))
    """(Gaussians, resolution) timed on the torch reference (slow: keep few)."""
    gpu_cases: Tuple[Tuple[int, int], ...] = ((100000, 512), (100000, 1024), (500000, 512), (500000, 1024))
    """(Gaussians, resolution) timed on cuda and gsplat when a GPU is present."""
    summary_n: int = 20000
    """Gaussian count of the cpu-vs-torch summary figure."""
    summary_res: int = 256
    """Resolution of the cpu-vs-torch summary figure."""
    repeats: int = 5
    """Timed runs per case for native backends (median reported)."""
    torch_repeats: int = 1
    """Timed runs per case for the torch reference (median reported)."""
    scale: float = 0.005
    """Median Gaussian standard deviation in metres."""
    sh_degree: int = 3
    """SH degree of the scene colours."""
    seed: int = 0
    """Scene seed."""

    def main(self) -> int:
        import numpy
        import torch

        from avatar.ops import backends

        av = backends()
        results: List[Dict] = []
        has_gpu = torch.cuda.is_available()
        plan: List[Tuple[str, int, int]] = []
        if av["cpu"][0]:
            plan += [("cpu", n, r) for n, r in self.cpu_cases]
        plan += [("torch", n, r) for n, r in self.torch_cases]
        if has_gpu:
            for name in ("cuda", "gsplat"):
                if av[name][0]:
                    plan += [(name, n, r) for n, r in self.gpu_cases]
        for name, n, res in plan:
            print(f"bench rasterize: {name:6s} N={n:7d} {res}x{res} ...", flush=True)
            rec = self._case(name, n, res)
            print(f"    fwd {rec['forward_ms']:.1f} ms, fwd+bwd {rec['forward_backward_ms']:.1f} ms, "
                  f"peak {rec['peak_memory_mb']:.1f} MB", flush=True)
            results.append(rec)

        def find(name, n, res):
            for r in results:
                if r["backend"] == name and r["n_gaussians"] == n and r["resolution"] == res:
                    return r
            return None

        summary: Dict = {}
        c, t = find("cpu", self.summary_n, self.summary_res), find("torch", self.summary_n, self.summary_res)
        if c and t:
            summary["cpu_vs_torch_speedup_fwd_bwd"] = round(t["forward_backward_ms"] / c["forward_backward_ms"], 2)
            summary["cpu_vs_torch_speedup_fwd"] = round(t["forward_ms"] / c["forward_ms"], 2)
            summary["cpu_vs_torch_case"] = {"n_gaussians": self.summary_n, "resolution": self.summary_res,
                                            "cpu_fwd_bwd_ms": c["forward_backward_ms"],
                                            "torch_fwd_bwd_ms": t["forward_backward_ms"]}
        else:
            summary["cpu_vs_torch_speedup_fwd_bwd"] = None
            summary["cpu_vs_torch_reason"] = f"cpu: {av['cpu'][1]}" if not av["cpu"][0] else "summary case not run"
        ratios = {}
        for n, res in self.gpu_cases:
            a, b = find("cuda", n, res), find("gsplat", n, res)
            if a and b:
                ratios[f"{n}@{res}"] = round(a["forward_backward_ms"] / b["forward_backward_ms"], 3)
        if ratios:
            summary["cuda_vs_gsplat_time_ratio"] = max(ratios.values())
            summary["cuda_vs_gsplat_time_ratio_per_case"] = ratios
        else:
            summary["cuda_vs_gsplat_time_ratio"] = None
            summary["cuda_vs_gsplat_reason"] = (
                "no CUDA GPU on this machine" if not has_gpu else
                f"cuda: {av['cuda'][1]}; gsplat: {av['gsplat'][1]}")

        doc = {
            "device": self._device(),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "numpy": numpy.__version__, "gsplat": _version("gsplat")},
            "settings": {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()
                            if k != "out"},
                         "scene": "Gaussians ~ N(0, (0.06, 0.08, 0.06) m) around the origin, "
                                  "log-normal scales (median `scale`), uniform opacity 0.1-1, random "
                                  "rotations, SH degree `sh_degree`; 1 camera at 0.6 m, f = 1.2 * res",
                         "torch_threads": torch.get_num_threads(),
                         "peak_memory_method": ("cpu/torch: sampled RSS peak during the call minus RSS "
                                                "before it (/proc/self/statm, 2 ms); cuda/gsplat: "
                                                "torch.cuda.max_memory_allocated delta"),
                         "backends": {k: {"available": v[0], "reason": v[1]} for k, v in av.items()}},
            "cases": results,
            "summary": summary,
        }
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        os.replace(tmp, self.out)
        print(json.dumps(summary, indent=2))
        print(f"wrote {self.out}")
        return 0

    # --- helpers ---------------------------------------------------------------------------

    def _scene(self, n: int, res: int, device):
        import torch

        g = torch.Generator().manual_seed(self.seed)
        means = torch.randn(n, 3, generator=g) * torch.tensor([0.06, 0.08, 0.06])
        quats = torch.randn(n, 4, generator=g)
        scales = self.scale * torch.exp(0.5 * torch.randn(n, 3, generator=g))
        opac = 0.1 + 0.9 * torch.rand(n, generator=g)
        K = (self.sh_degree + 1) ** 2
        sh = 0.3 * torch.randn(n, K, 3, generator=g)
        vm = torch.eye(4)[None]
        vm[0, 2, 3] = 0.6
        f = 1.2 * res
        Ks = torch.tensor([[[f, 0, res / 2], [0, f, res / 2], [0, 0, 1]]])
        t = [x.to(device) for x in (means, quats, scales, opac, sh, vm, Ks)]
        return t

    def _case(self, name: str, n: int, res: int) -> Dict:
        import torch

        from avatar.ops import rasterize

        dev = torch.device("cuda" if name in ("cuda", "gsplat") else "cpu")
        means, quats, scales, opac, sh, vm, Ks = self._scene(n, res, dev)
        leaves = [x.clone().requires_grad_(True) for x in (means, quats, scales, opac, sh)]
        g = torch.Generator().manual_seed(1)
        v_img = torch.randn(1, res, res, 3, generator=g).to(dev)
        v_alpha = torch.randn(1, res, res, 1, generator=g).to(dev)

        def fwd():
            return rasterize(*leaves, vm, Ks, res, res, sh_degree=self.sh_degree, backend=name)

        def fwd_bwd():
            img, alpha, _ = fwd()
            ((img * v_img).sum() + (alpha * v_alpha).sum()).backward()
            for x in leaves:
                x.grad = None

        def sync():
            if dev.type == "cuda":
                torch.cuda.synchronize()

        reps = self.torch_repeats if name == "torch" else self.repeats
        if name != "torch":
            fwd_bwd()            # warm-up (loads/JIT-compiles the extension, allocator warm-up)
            sync()
        t_f, t_fb = [], []
        peak = 0.0
        for _ in range(reps):
            with torch.no_grad():
                sync()
                t0 = time.perf_counter()
                fwd()
                sync()
                t_f.append(time.perf_counter() - t0)
            with _PeakMemory(dev) as pm:
                t0 = time.perf_counter()
                fwd_bwd()
                sync()
                t_fb.append(time.perf_counter() - t0)
            peak = max(peak, pm.peak_mb)
        with torch.no_grad():
            _, _, meta = fwd()
        return {"backend": name, "n_gaussians": n, "resolution": res, "repeats": reps,
                "forward_ms": round(1e3 * statistics.median(t_f), 2),
                "forward_backward_ms": round(1e3 * statistics.median(t_fb), 2),
                "forward_ms_all": [round(1e3 * x, 2) for x in t_f],
                "forward_backward_ms_all": [round(1e3 * x, 2) for x in t_fb],
                "peak_memory_mb": round(peak, 1),
                "visible_gaussians": int((meta["radii"] > 0).sum())}

    @staticmethod
    def _device() -> Dict:
        import torch

        d = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
             "cpu_count": os.cpu_count()}
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    d["cpu_model"] = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        if torch.cuda.is_available():
            d["gpu"] = torch.cuda.get_device_name(0)
        else:
            d["gpu"] = None
        return d


def _version(mod: str) -> Optional[str]:
    try:
        from importlib.metadata import version
        return version(mod)
    except Exception:
        return None


class _PeakMemory:
    """Peak memory growth (MB) during a block: sampled RSS on CPU, the CUDA allocator on GPU."""

    def __init__(self, device):
        self.device = device
        self.peak_mb = 0.0

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self._base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            return self
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._base = self._rss()
        self._max = self._base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _sample(self):
        while not self._stop.is_set():
            self._max = max(self._max, self._rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_mb = (torch.cuda.max_memory_allocated() - self._base) / 2 ** 20
            return False
        self._stop.set()
        self._thread.join()
        self._max = max(self._max, self._rss())
        self.peak_mb = (self._max - self._base) / 2 ** 20
        return False
