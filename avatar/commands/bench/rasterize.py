"""`avatar bench rasterize` -> benchmarks/results/rasterize.json.

Times avatar.ops.rasterize per backend x Gaussian count x resolution on a synthetic head-sized
scene (Gaussians in a 0.1 m ellipsoid, log-normal scales around `scale` metres, SH degree 3, one
camera at 0.6 m with a ~45 degree field of view): forward ms and forward+backward ms (median of
`repeats` runs after a warm-up; the backward pushes a fixed random gradient on colours and
alphas), and peak memory. Every case runs in a fresh subprocess so that CPU peak memory can be
read as a high-water mark: the process's own VmHWM (avatar.io.memory.peak_rss_mb) after the first
forward+backward minus VmHWM after building the scene and loading the backend (tracemalloc
cannot see torch's allocator). GPU: torch.cuda.max_memory_allocated() delta over that call.

summary.cpu_vs_torch_speedup_fwd_bwd = torch fwd+bwd time / cpu fwd+bwd time at the `summary_n`
Gaussians and `summary_res` pixels square, measured in this run.

CPU peer comparison (no peer rasterizes on a CPU: gsplat's pure-torch rasterizer calls CUDA; its
pure-torch projection runs anywhere): the projection stage alone — quaternion/scale -> covariance,
EWA projection, conic, extents — forward and forward+backward (gradients to means, quats, scales,
from a fixed random gradient on means2d, conics and depths) on the same scenes, our cpu backend
against gsplat's `_quat_scale_to_covar_preci` + `_fully_fused_projection` (gsplat.cuda._torch_impl).
summary.cpu_vs_gsplat_torch_projection_speedup_fwd_bwd = gsplat time / our time at the summary
case (or the first `projection_cases` entry). summary.cuda_vs_gsplat_time_ratio
(fwd+bwd, our cuda time / gsplat time, worst over the GPU cases) only when a GPU is present.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from avatar.io.atomic import atomic_write_json
from avatar.io.memory import peak_rss_mb
from avatar.commands.bench.machine import device, load_average, versions


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
    projection_cases: Tuple[Tuple[int, int], ...] = ((20000, 256), (100000, 512))
    """(Gaussians, resolution) of the CPU projection peer comparison (ours vs gsplat's pure torch)."""
    projection_repeats: int = 20
    """Timed runs per projection case (milliseconds each: more runs for a steadier median)."""
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
    omp_passive: bool = True
    """Run the cases with OMP_WAIT_POLICY=PASSIVE (idle OpenMP threads sleep instead of spinning;
    on a shared, oversubscribed machine spinning threads slow every backend down). Applies to the
    torch reference's own threads too."""

    def main(self) -> int:
        import torch

        from avatar.ops import backends

        av = backends()
        load_start = load_average()
        results: List[Dict] = []
        has_gpu = torch.cuda.is_available()
        plan: List[Tuple[str, int, int]] = []
        if av["cpu"][0]:
            plan += [("cpu", n, r) for n, r in self.cpu_cases]
        plan += [("torch", n, r) for n, r in self.torch_cases]
        has_gsplat = _version("gsplat") is not None
        for n, r in self.projection_cases:
            plan += ([("proj:cpu", n, r)] if av["cpu"][0] else []) + ([("proj:gsplat_torch", n, r)] if has_gsplat else [])
        if has_gpu:
            for name in ("cuda", "gsplat"):
                if av[name][0]:
                    plan += [(name, n, r) for n, r in self.gpu_cases]
        for name, n, res in plan:
            print(f"bench rasterize: {name:6s} N={n:7d} {res}x{res} ...", flush=True)
            rec = self._case_subprocess(name, n, res)
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
        pn, pr = ((self.summary_n, self.summary_res) if (self.summary_n, self.summary_res) in self.projection_cases
                  else (self.projection_cases[0] if self.projection_cases else (0, 0)))
        po, pg = find("proj:cpu", pn, pr), find("proj:gsplat_torch", pn, pr)
        if po and pg:
            summary["cpu_vs_gsplat_torch_projection_speedup_fwd_bwd"] = round(
                pg["forward_backward_ms"] / po["forward_backward_ms"], 2)
            summary["cpu_vs_gsplat_torch_projection_speedup_fwd"] = round(pg["forward_ms"] / po["forward_ms"], 2)
            summary["cpu_vs_gsplat_torch_projection_case"] = {
                "n_gaussians": pn, "resolution": pr, "cpu_fwd_bwd_ms": po["forward_backward_ms"],
                "gsplat_torch_fwd_bwd_ms": pg["forward_backward_ms"],
                "per_case_speedup_fwd_bwd": {
                    f"{n}@{r}": round(b["forward_backward_ms"] / a["forward_backward_ms"], 2)
                    for n, r in self.projection_cases
                    for a, b in [(find("proj:cpu", n, r), find("proj:gsplat_torch", n, r))] if a and b}}
        else:
            summary["cpu_vs_gsplat_torch_projection_speedup_fwd_bwd"] = None
            summary["cpu_vs_gsplat_torch_projection_reason"] = (
                "gsplat is not installed" if not has_gsplat else f"cpu: {av['cpu'][1]}" if not av["cpu"][0]
                else "projection case not run")
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
            "device": device(),
            "versions": versions("gsplat"),
            "settings": {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()
                            if k != "out"},
                         "scene": "Gaussians ~ N(0, (0.06, 0.08, 0.06) m) around the origin, "
                                  "log-normal scales (median `scale`), uniform opacity 0.1-1, random "
                                  "rotations, SH degree `sh_degree`; 1 camera at 0.6 m, f = 1.2 * res",
                         "torch_threads": torch.get_num_threads(),
                         "load_average_at_start": load_start,
                         "load_average_at_end": load_average(),
                         "peak_memory_method": ("cpu/torch: VmHWM high-water mark after the first "
                                                "forward+backward minus VmHWM after scene set-up and "
                                                "backend load, one fresh process per case; cuda/gsplat: "
                                                "torch.cuda.max_memory_allocated delta over that call"),
                         "backends": {k: {"available": v[0], "reason": v[1]} for k, v in av.items()}},
            "cases": results,
            "summary": summary,
        }
        self.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.out, doc, indent=2)
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

    def _case_subprocess(self, name: str, n: int, res: int) -> Dict:
        params = {k: v for k, v in asdict(self).items()
                  if k in ("repeats", "torch_repeats", "projection_repeats", "scale", "sh_degree", "seed")}
        env = dict(os.environ)
        if self.omp_passive:
            env["OMP_WAIT_POLICY"] = "PASSIVE"
        proc = subprocess.run(
            [sys.executable, "-c", "from avatar.commands.bench.rasterize import _child; _child()",
             json.dumps({"params": params, "name": name, "n": n, "res": res})],
            check=True, env=env, stdout=subprocess.PIPE, text=True)
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def _projection(self, impl: str, n: int, res: int):
        """(leaves, fn): fn() projects the scene with `impl` ("cpu": our cpu backend, "gsplat_torch":
        gsplat's pure-PyTorch projection) -> means2d [C,N,2], conics [C,N,3], depths [C,N]."""
        import torch

        means, quats, scales, opac, _, vm, Ks = self._scene(n, res, torch.device("cpu"))
        leaves = [x.clone().requires_grad_(True) for x in (means, quats, scales, opac)]
        if impl == "cpu":
            from avatar.ops._ext import Ops

            ops = Ops("cpu")

            def fn():
                m, q, s, o = leaves
                means2d, conics, depths, _, _ = ops.project(m[None], q[None], s[None], o[None], vm[None], Ks[None],
                                                            res, res, 0.01, 1e10, 0.3, False)
                return means2d[0], conics[0], depths[0]
        else:
            from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

            def fn():
                m, q, s, _ = leaves
                covars, _ = _quat_scale_to_covar_preci(q, s, compute_covar=True, compute_preci=False, triu=False)
                _, means2d, depths, conics, _ = _fully_fused_projection(m, covars, vm, Ks, res, res, eps2d=0.3,
                                                                        near_plane=0.01, far_plane=1e10)
                return means2d, conics, depths
        return leaves, fn

    def _case(self, name: str, n: int, res: int) -> Dict:
        import torch

        from avatar.ops import rasterize

        if name.startswith("proj:"):
            return self._projection_case(name, n, res)

        dev = torch.device("cuda" if name in ("cuda", "gsplat") else "cpu")
        means, quats, scales, opac, sh, vm, Ks = self._scene(n, res, dev)
        leaves = [x.clone().requires_grad_(True) for x in (means, quats, scales, opac, sh)]
        g = torch.Generator().manual_seed(1)
        v_img = torch.randn(1, res, res, 3, generator=g).to(dev)
        v_alpha = torch.randn(1, res, res, 1, generator=g).to(dev)

        def fwd(w=res):
            return rasterize(*leaves, vm, Ks, w, w, sh_degree=self.sh_degree, backend=name)

        def fwd_bwd():
            img, alpha, _ = fwd()
            ((img * v_img).sum() + (alpha * v_alpha).sum()).backward()
            for x in leaves:
                x.grad = None

        def sync():
            if dev.type == "cuda":
                torch.cuda.synchronize()

        with torch.no_grad():
            fwd(16)              # loads (or JIT-compiles) the backend outside the measurements
        sync()
        maxrss = peak_rss_mb
        base = maxrss()
        if dev.type == "cuda":
            base_gpu = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        fwd_bwd()                # first call: the memory high-water mark (and warm-up)
        sync()
        first = time.perf_counter() - t0
        peak = ((torch.cuda.max_memory_allocated() - base_gpu) / 2 ** 20 if dev.type == "cuda"
                else maxrss() - base)
        reps = self.torch_repeats if name == "torch" else self.repeats
        t_f, t_fb = [], []
        if name == "torch":      # minutes per call: the first call counts as the first repeat
            t_fb.append(first)
        while len(t_fb) < reps:
            sync()
            t0 = time.perf_counter()
            fwd_bwd()
            sync()
            t_fb.append(time.perf_counter() - t0)
        for _ in range(reps):
            with torch.no_grad():
                sync()
                t0 = time.perf_counter()
                _, _, meta = fwd()
                sync()
                t_f.append(time.perf_counter() - t0)
        return {"backend": name, "n_gaussians": n, "resolution": res, "repeats": reps,
                "forward_ms": round(1e3 * statistics.median(t_f), 2),
                "forward_backward_ms": round(1e3 * statistics.median(t_fb), 2),
                "forward_ms_all": [round(1e3 * x, 2) for x in t_f],
                "forward_backward_ms_all": [round(1e3 * x, 2) for x in t_fb],
                "peak_memory_mb": round(peak, 1),
                "visible_gaussians": int((meta["radii"] > 0).sum())}

    def _projection_case(self, name: str, n: int, res: int) -> Dict:
        """Forward and forward+backward time of one projection implementation (CPU)."""
        import torch

        leaves, fn = self._projection(name.split(":", 1)[1], n, res)
        g = torch.Generator().manual_seed(2)
        v = [torch.randn(1, n, k, generator=g) for k in (2, 3)] + [torch.randn(1, n, generator=g)]

        def fwd_bwd():
            outs = fn()
            sum((o * w).sum() for o, w in zip(outs, v)).backward()
            for x in leaves:
                x.grad = None

        maxrss = peak_rss_mb
        base = maxrss()
        fwd_bwd()                                            # warm-up (loads the extension), high-water mark
        peak = maxrss() - base
        t_f, t_fb = [], []
        for _ in range(self.projection_repeats):
            t0 = time.perf_counter()
            fwd_bwd()
            t_fb.append(time.perf_counter() - t0)
            with torch.no_grad():
                t0 = time.perf_counter()
                fn()
                t_f.append(time.perf_counter() - t0)
        return {"backend": name, "n_gaussians": n, "resolution": res, "repeats": self.projection_repeats,
                "stage": "projection (covariance + EWA projection + conic + extents)",
                "forward_ms": round(1e3 * statistics.median(t_f), 2),
                "forward_backward_ms": round(1e3 * statistics.median(t_fb), 2),
                "forward_ms_all": [round(1e3 * x, 2) for x in t_f],
                "forward_backward_ms_all": [round(1e3 * x, 2) for x in t_fb],
                "peak_memory_mb": round(peak, 1)}


def _version(mod: str) -> Optional[str]:
    try:
        from importlib.metadata import version
        return version(mod)
    except Exception:
        return None


def _child() -> None:
    """Subprocess entry of one benchmark case: argv[1] = JSON {params, name, n, res}; prints JSON."""
    spec = json.loads(sys.argv[1])
    bench = BenchRasterize(**spec["params"])
    print(json.dumps(bench._case(spec["name"], spec["n"], spec["res"])), flush=True)
