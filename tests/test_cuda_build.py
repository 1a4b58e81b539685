"""The native build checks are real checks: a kernel with a compile error makes `make cuda-build`
(scripts/cuda-build.sh) fail, while setup.py still builds the CPU extension when the CUDA part
cannot be built. Each runs on a copy of the native tree in a temp dir."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CUDA_HOME = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))
CUDA_VENV = Path(os.environ.get("AVATAR_CUDA_VENV", Path.home() / ".cache" / "avatar" / "cuda-venv"))


def _native_tree(dst: Path) -> Path:
    """setup.py, scripts/cuda-build.sh and cuda/ copied to dst (a buildable native tree)."""
    (dst / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "setup.py", dst / "setup.py")
    shutil.copy2(ROOT / "scripts" / "cuda-build.sh", dst / "scripts" / "cuda-build.sh")
    shutil.copytree(ROOT / "cuda", dst / "cuda")
    return dst


def _break(path: Path, anchor: str) -> None:
    text = path.read_text()
    assert anchor in text, f"{anchor!r} not in {path}"
    path.write_text(text.replace(anchor, anchor + "int oops ", 1))     # `(int oops int N, ...`


def _fake_nvcc(root: Path, version_ok: bool) -> Path:
    """A CUDA_HOME whose nvcc answers --version like CUDA 13.0 (or fails it) and fails every compile."""
    nvcc = root / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True)
    say = 'echo "Cuda compilation tools, release 13.0, V13.0.88"; exit 0' if version_ok else "exit 3"
    nvcc.write_text('#!/bin/sh\nfor a in "$@"; do [ "$a" = --version ] && { %s; }; done\n'
                    'echo "nvcc (fake): simulated compiler failure" >&2; exit 1\n' % say)
    nvcc.chmod(0o755)
    (root / "include").mkdir()
    return root


NEEDS_NVCC = pytest.mark.skipif(not (CUDA_HOME / "bin" / "nvcc").exists(), reason=f"no nvcc under {CUDA_HOME}")
# setup.py only reaches its CUDA build with a CUDA build of torch: the one `make cuda-build` caches
NEEDS_CUDA_TORCH = pytest.mark.skipif(not (CUDA_VENV / ".avatar-cuda-venv").exists(),
                                      reason=f"no CUDA-torch venv at {CUDA_VENV} (`make cuda-build` creates it)")
CUDA_PY = CUDA_VENV / "bin" / "python"


@NEEDS_NVCC
@NEEDS_CUDA_TORCH
def test_broken_kernel_fails_cuda_build(tmp_path):
    tree = _native_tree(tmp_path / "tree")
    _break(tree / "cuda" / "csrc" / "cuda" / "rasterize.cu", "__global__ void raster_forward_kernel(")
    env = dict(os.environ, AVATAR_CUDA_VENV=str(CUDA_VENV), AVATAR_CUDA_BUILD_DIR=str(tmp_path / "build"))
    r = subprocess.run([str(tree / "scripts" / "cuda-build.sh")], cwd=tree, env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode != 0, r.stderr[-2000:]
    assert "cuda-build: FAILED" in r.stderr and "rasterize.cu" in r.stderr, r.stderr[-2000:]


def _build_ext(tree: Path, out: Path, python=CUDA_PY, **env):
    env = dict(os.environ, MAX_JOBS="2", **env)
    return subprocess.run([str(python), "setup.py", "build_ext", "--build-lib", str(out / "lib"),
                           "--build-temp", str(out / "temp")], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=900)


def test_setup_skips_cuda_with_a_cpu_torch(tmp_path):
    """AVATAR_BUILD_CUDA=1 with a CPU-only torch (this venv's): one warning, exit 0; fatal if required."""
    import torch
    if torch.version.cuda is not None:
        pytest.skip("this venv's torch is a CUDA build")
    tree = _native_tree(tmp_path / "tree")
    r = _build_ext(tree, tmp_path / "out", python=sys.executable, AVATAR_BUILD_CPU="0", AVATAR_BUILD_CUDA="1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("WARNING: avatar._C_cuda not built (torch") == 1, r.stderr[-3000:]
    r = _build_ext(tree, tmp_path / "out2", python=sys.executable, AVATAR_BUILD_CPU="0", AVATAR_BUILD_CUDA="1",
                   AVATAR_CUDA_REQUIRED="1")
    assert r.returncode != 0 and "cannot build avatar._C_cuda" in r.stderr


@NEEDS_CUDA_TORCH
def test_setup_skips_cuda_when_toolchain_check_fails(tmp_path):
    """torch's pre-build check (nvcc --version) fails: one warning, exit 0, no _C_cuda."""
    tree = _native_tree(tmp_path / "tree")
    cuda = _fake_nvcc(tmp_path / "cuda", version_ok=False)
    r = _build_ext(tree, tmp_path / "out", AVATAR_BUILD_CPU="0", AVATAR_BUILD_CUDA="1", CUDA_HOME=str(cuda))
    assert r.returncode == 0, r.stderr[-3000:]
    warn = [ln for ln in r.stderr.splitlines() if "WARNING: avatar._C_cuda not built" in ln]
    assert len(warn) == 1 and "toolchain check failed" in warn[0], r.stderr[-3000:]
    assert not list((tmp_path / "out" / "lib").rglob("_C_cuda*"))
    # ... and AVATAR_CUDA_REQUIRED=1 (make cuda-build) turns the same problem into a failure
    r = _build_ext(tree, tmp_path / "out2", AVATAR_BUILD_CPU="0", AVATAR_BUILD_CUDA="1", CUDA_HOME=str(cuda),
                   AVATAR_CUDA_REQUIRED="1")
    assert r.returncode != 0


@pytest.mark.slow
@NEEDS_CUDA_TORCH
@pytest.mark.skipif(os.environ.get("AVATAR_NATIVE_BUILD_TESTS") != "1",
                    reason="compiles the CPU extension (~2 min on 2 cores): AVATAR_NATIVE_BUILD_TESTS=1 "
                           "runs it (.ci/run does)")
def test_setup_builds_cpu_extension_when_cuda_compile_fails(tmp_path):
    """The CUDA compile fails (a broken nvcc): setup.py warns once, exits 0, and _C_cpu works."""
    tree = _native_tree(tmp_path / "tree")
    cuda = _fake_nvcc(tmp_path / "cuda", version_ok=True)
    out = tmp_path / "out"
    r = _build_ext(tree, out, AVATAR_BUILD_CUDA="1", CUDA_HOME=str(cuda))
    assert r.returncode == 0, r.stderr[-3000:]
    warn = [ln for ln in r.stderr.splitlines() if "WARNING: avatar._C_cuda not built" in ln]
    assert len(warn) == 1 and "compiling it failed" in warn[0], r.stderr[-3000:]
    assert not list((out / "lib").rglob("_C_cuda*"))
    assert list((out / "lib" / "avatar").glob("_C_cpu*.so"))
    code = ("import sys, torch; sys.path.insert(0, sys.argv[1]); import avatar._C_cpu as m; "
            "assert all(hasattr(m, n) for n in ('project_fwd', 'project_bwd', 'sh_fwd', 'sh_bwd', "
            "'raster_fwd', 'raster_bwd')); print(m.__file__)")
    r = subprocess.run([str(CUDA_PY), "-I", "-c", code, str(out / "lib")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and str(out) in r.stdout, r.stderr[-2000:]


GPU_CHECK = ROOT / "scripts" / "gpu-check.sh"


def test_gpu_check_plan_lists_every_step():
    r = subprocess.run([str(GPU_CHECK), "--dry-run"], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHON=sys.executable))
    assert r.returncode == 0, r.stderr[-2000:]
    steps = [ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("step ")]
    assert steps[:8] == ["env", "deps", "build", "backends", "test_gpu", "test_cpu_twin", "bench_rasterize",
                         "bench_drive"], steps
    assert "AVATAR_CUDA_REQUIRED=1" in r.stdout and "-m gpu" in r.stdout


def test_gpu_check_merges_gpu_figures_into_results(tmp_path):
    """Step 5 on a fetched $OUT: GPU cases and cuda_vs_gsplat_time_ratio / gpu_render_fps_512 join
    the checkout's rasterize.json, whose CPU figures stay."""
    import json
    out, results = tmp_path / "out", tmp_path / "results"
    out.mkdir()
    results.mkdir()
    (results / "rasterize.json").write_text(json.dumps(
        {"cases": [{"backend": "cpu", "n_gaussians": 20000}], "summary": {"cpu_vs_torch_speedup_fwd_bwd": 9.0}}))
    (out / "rasterize.json").write_text(json.dumps({
        "device": {"gpu": "H200"}, "cases": [{"backend": "cuda", "n_gaussians": 100000},
                                             {"backend": "gsplat", "n_gaussians": 100000},
                                             {"backend": "cpu", "n_gaussians": 20000}],
        "summary": {"cuda_vs_gsplat_time_ratio": 0.8, "cuda_vs_gsplat_time_ratio_per_case": {"100000@512": 0.8}}}))
    (out / "drive.json").write_text(json.dumps({"summary": {"gpu_fps_mono_512": 640.0}}))
    (out / "steps.tsv").write_text("build\t0\t95\tpython setup.py\n")
    r = subprocess.run([str(GPU_CHECK), "--merge-only"], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHON=sys.executable, OUT=str(out), AVATAR_RESULTS_DIR=str(results)))
    assert r.returncode == 0, r.stderr[-2000:]
    merged = json.loads((results / "rasterize.json").read_text())
    assert merged["summary"]["cpu_vs_torch_speedup_fwd_bwd"] == 9.0 and merged["cases"][0]["backend"] == "cpu"
    assert merged["summary"]["cuda_vs_gsplat_time_ratio"] == 0.8
    assert merged["summary"]["gpu_render_fps_512"] == 640.0
    assert [c["backend"] for c in merged["gpu"]["cases"]] == ["cuda", "gsplat"]
    assert (out / "benchmarks" / "results" / "rasterize.json").exists()
    record = json.loads((out / "gpu-check.json").read_text())
    assert record["ran_on_gpu"] and record["steps"][0]["step"] == "build"
