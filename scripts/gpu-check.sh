#!/usr/bin/env bash
# ONE command for a GPU machine (fresh H200 image: CUDA torch, nvcc, no package registry; ~10 min):
#   1. installs the wheels it lacks from .whl/ (scripts/gpu-wheels.sh makes that folder here),
#   2. builds avatar._C_cpu and avatar._C_cuda against THIS machine's torch (CUDA failure = fatal),
#      while gsplat JIT-compiles its own kernels in the background,
#   3. runs the gpu-marked tests (cuda vs torch reference vs cpu twin, fwd+bwd; cuda vs gsplat),
#   4. runs the GPU benchmarks (avatar bench rasterize / drive [/ train when it takes --device]),
#      writing JSON to $OUT (default outputs/gpu-check) and merging the GPU figures into
#      benchmarks/results/ (a copy lands in $OUT/benchmarks/results/ to bring back).
# Every step is timed and recorded in $OUT/gpu-check.json; later steps run even if one fails and
# the exit status is non-zero if any failed.
#
#   scripts/gpu-check.sh            on the GPU machine
#   scripts/gpu-check.sh --no-gpu   here: the same steps with the CUDA build off, the benchmarks in
#                                   a seconds-long configuration (checks the script, flags, merge)
#   scripts/gpu-check.sh --dry-run  print the plan only (with --no-gpu: that mode's plan)
#   OUT=DIR scripts/gpu-check.sh --merge-only   redo step 5 from a fetched $OUT (e.g. here, after a
#                                   device run: merges into this checkout's benchmarks/results/)
# Env: PYTHON (default python3), WHEELS (default .whl), CUDA_HOME (default /usr/local/cuda),
#      TORCH_CUDA_ARCH_LIST (default: the visible GPU's), AVATAR_GPU_CHECK_BUDGET_S (default 480),
#      AVATAR_RESULTS_DIR (default benchmarks/results).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
MODE=gpu
DRY=0
MERGE_ONLY=0
for a in "$@"; do
  case "$a" in
    --no-gpu) MODE=nogpu ;;
    --dry-run) DRY=1 ;;
    --merge-only) MERGE_ONLY=1 ;;
    -h|--help) sed -n 2,22p "$0"; exit 0 ;;
    *) echo "gpu-check: unknown argument $a" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-$ROOT/outputs/gpu-check}
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-$ROOT/.whl}
SITE=${AVATAR_GPU_SITE:-/tmp/avatar-gpu-site}  # wheels install here (pip --target), not into the image
BUDGET=${AVATAR_GPU_CHECK_BUDGET_S:-480}
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$SITE/bin:$PATH"                  # ninja, for our build and gsplat's JIT
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
RESULTS=${AVATAR_RESULTS_DIR:-$ROOT/benchmarks/results}
mkdir -p "$OUT"
LOG="$OUT/steps.tsv"
[ "$MERGE_ONLY" = 1 ] || [ "$DRY" = 1 ] || : > "$LOG"
T0=$SECONDS
FAILED=0

say() { echo "gpu-check: $*" >&2; }
left() { echo $(( BUDGET - (SECONDS - T0) )); }
# step NAME TIMEOUT_S CMD...: run, time, record; output in $OUT/NAME.log
step() {
  local name=$1 limit=$2; shift 2
  if [ "$DRY" = 1 ]; then printf 'step %-14s (<= %ss): %s\n' "$name" "$limit" "$*"; return 0; fi
  local budget; budget=$(left)
  [ "$budget" -lt "$limit" ] && limit=$budget
  if [ "$limit" -le 5 ]; then
    say "$name: SKIPPED (time budget spent)"; printf '%s\tskipped\t0\t%s\n' "$name" "budget" >> "$LOG"; FAILED=1; return 1
  fi
  say "$name (<= ${limit}s): $*"
  local t=$SECONDS rc
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1; rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t))" "$*" >> "$LOG"
  if [ "$rc" -ne 0 ]; then FAILED=1; say "$name: FAILED (rc $rc, ${SECONDS}s); last lines:"; tail -n 15 "$OUT/$name.log" >&2
  else say "$name: ok ($((SECONDS - t)) s)"; fi
  return "$rc"
}

if [ "$MERGE_ONLY" = 0 ]; then
# --- 0. the machine --------------------------------------------------------------------------
step env 60 "$PY" - "$MODE" <<'PY'
import json, os, platform, shutil, subprocess, sys
import torch
mode = sys.argv[1]
info = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "cpus": os.cpu_count(),
        "nvcc": shutil.which("nvcc") or os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc")}
if torch.cuda.is_available():
    info["gpu"] = torch.cuda.get_device_name(0)
    info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
print(json.dumps(info, indent=2))
if mode == "gpu" and not (torch.cuda.is_available() and torch.version.cuda):
    sys.exit("gpu-check: no usable CUDA device / CUDA torch here (use --no-gpu to check the script)")
PY
if [ "$MODE" = gpu ] && [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  TORCH_CUDA_ARCH_LIST=$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability(0))' 2>/dev/null || echo "9.0")
  export TORCH_CUDA_ARCH_LIST
fi

# --- 1. missing Python packages, from the carried wheel folder -------------------------------
step deps 120 "$PY" - "$WHEELS" "$SITE" <<'PY'
import importlib.util, subprocess, sys
from pathlib import Path
wheels, site = Path(sys.argv[1]), Path(sys.argv[2])
need = {"tyro": "tyro", "yaml": "pyyaml", "tqdm": "tqdm", "imageio_ffmpeg": "imageio-ffmpeg",
        "plyfile": "plyfile", "websockets": "websockets", "gsplat": "gsplat", "jaxtyping": "jaxtyping",
        "rich": "rich", "ninja": "ninja", "docstring_parser": "docstring-parser", "typeguard": "typeguard",
        "pytest": "pytest", "pluggy": "pluggy", "iniconfig": "iniconfig"}
optional = {"scipy": "scipy", "cv2": "opencv-python-headless", "matplotlib": "matplotlib"}
missing = [p for m, p in need.items() if importlib.util.find_spec(m) is None]
if missing and wheels.is_dir():
    files = [str(w) for w in sorted(wheels.glob("*.whl"))
             if any(w.name.lower().replace("_", "-").startswith(p.replace("_", "-") + "-") for p in missing)]
    if files:
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--target",
                        str(site), "-q", *files], check=False)
importlib.invalidate_caches()
still = [p for m, p in need.items() if importlib.util.find_spec(m) is None]
absent = [p for m, p in optional.items() if importlib.util.find_spec(m) is None]
print("installed from", wheels, ":", sorted(set(missing) - set(still)) or "nothing")
print("optional, absent:", absent or "none")
if still:
    sys.exit(f"still missing: {still} (run scripts/gpu-wheels.sh here and carry .whl)")
PY

# --- 2. build against this machine's torch (gsplat's JIT in parallel) ------------------------
GSPLAT_PID=
if [ "$MODE" = gpu ]; then
  # `timeout` leads its own process group: killing that group stops the whole compile if needed
  ( timeout 420 "$PY" -c 'from gsplat.cuda._backend import _C; print("gsplat CUDA kernels ready:", _C is not None)' \
      > "$OUT/gsplat-jit.log" 2>&1 & echo $! > "$OUT/gsplat-jit.pid"; wait $!; echo "rc=$?" >> "$OUT/gsplat-jit.log" ) &
  GSPLAT_PID=$!
  step build 300 env AVATAR_BUILD_CUDA=1 AVATAR_CUDA_REQUIRED=1 "$PY" setup.py -q build_ext --inplace
else
  step build 300 env AVATAR_BUILD_CUDA=0 "$PY" setup.py -q build_ext --inplace
fi
step backends 60 "$PY" -c 'import json, avatar.ops as o; print(json.dumps(o.backends(), indent=1))'

# --- 3. tests: gpu-marked (skip cleanly without a GPU) + the CPU twin as a sanity check --------
if [ -n "$GSPLAT_PID" ] && [ "$MODE" = gpu ]; then
  # the gsplat comparison needs its kernels: wait for the background build, within the budget
  w=$(( $(left) - 200 )); [ "$w" -gt 0 ] && timeout "$w" tail --pid="$GSPLAT_PID" -f /dev/null
  if kill -0 "$GSPLAT_PID" 2>/dev/null || ! grep -q "rc=0" "$OUT/gsplat-jit.log"; then
    kill -- -"$(cat "$OUT/gsplat-jit.pid")" 2>/dev/null
    export AVATAR_NO_GSPLAT=1                 # no gsplat comparison rather than a JIT inside a timed case
    say "gsplat kernels not ready: running without the gsplat comparisons (log: $OUT/gsplat-jit.log)"
  fi
  tail -n 3 "$OUT/gsplat-jit.log" >&2
fi
step test_gpu 180 "$PY" -m pytest -q -m gpu tests -p no:cacheprovider --junitxml="$OUT/pytest-gpu.xml"
step test_cpu_twin 120 "$PY" -m pytest -q tests/test_rasterize_cpu.py -p no:cacheprovider

# --- 4. benchmarks -----------------------------------------------------------------------------
if [ "$MODE" = gpu ]; then
  RAST_ARGS=(--cpu-cases 20000 256 --torch-cases 20000 256 --repeats 10)
  DRIVE_ARGS=(--seconds 4 --latency-seconds 4)
else
  RAST_ARGS=(--cpu-cases 2000 64 --torch-cases 2000 64 --summary-n 2000 --summary-res 64 --repeats 1)
  DRIVE_ARGS=(--seconds 0.5 --latency-seconds 0.5 --latency-size 64)
fi
step bench_rasterize 240 "$PY" -m avatar bench rasterize --out "$OUT/rasterize.json" "${RAST_ARGS[@]}"
step bench_drive 180 "$PY" -m avatar bench drive --out "$OUT/drive.json" "${DRIVE_ARGS[@]}"
if "$PY" -m avatar bench train --help 2>/dev/null | grep -q -- "--device"; then
  step bench_train 240 "$PY" -m avatar bench train --device cuda --out "$OUT/train.json" --skip-synthetic
else
  say "bench_train: not run (avatar bench train has no --device option yet: training stays on the CPU)"
  [ "$DRY" = 1 ] || printf 'bench_train\tnot-run\t0\tno --device option\n' >> "$LOG"
fi

fi   # MERGE_ONLY

# --- 5. merge the GPU figures into benchmarks/results/ and write the record ------------------
[ "$DRY" = 1 ] && exit 0
"$PY" - "$OUT" "$RESULTS" "$MODE" "$LOG" "$((SECONDS - T0))" "$MERGE_ONLY" <<'PY'
import json, shutil, sys, time
from pathlib import Path
out, results, mode, log, total = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), int(sys.argv[5])
merge_only = sys.argv[6] == "1"

def load(p):
    try:
        return json.loads(Path(p).read_text())
    except (OSError, ValueError):
        return None

steps = ([dict(zip(("step", "rc", "seconds", "command"), ln.split("\t", 3))) for ln in log.read_text().splitlines()]
         if log.exists() else [])
if merge_only:                                     # keep the device run's own timing
    total = (load(out / "gpu-check.json") or {}).get("total_seconds", total)
record = {"mode": mode, "merge_only": merge_only, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "total_seconds": total,
          "steps": steps,
          "ran_on_gpu": mode == "gpu" and bool(load(out / "rasterize.json"))}
try:
    record["machine"] = json.loads((out / "env.log").read_text())
except (OSError, ValueError):
    pass
rast, drive = load(out / "rasterize.json"), load(out / "drive.json")
merged_dir = out / "benchmarks" / "results"
merged_dir.mkdir(parents=True, exist_ok=True)
if mode == "gpu" and rast:
    # keep this repo's CPU figures; add the GPU machine's GPU cases and summary under "gpu"
    base = load(results / "rasterize.json") or {}
    gpu_cases = [c for c in rast.get("cases", []) if c.get("backend") in ("cuda", "gsplat")]
    s = rast.get("summary", {})
    base["gpu"] = {"device": rast.get("device"), "versions": rast.get("versions"), "cases": gpu_cases,
                   "summary": {k: v for k, v in s.items() if k.startswith("cuda_vs_gsplat")},
                   "source": "scripts/gpu-check.sh"}
    base.setdefault("summary", {})
    for k in ("cuda_vs_gsplat_time_ratio", "cuda_vs_gsplat_time_ratio_per_case"):
        if k in s:
            base["summary"][k] = s[k]
    if drive:
        fps = drive.get("summary", {}).get("gpu_fps_mono_512")
        if fps is not None:
            base["summary"]["gpu_render_fps_512"] = fps
            base["summary"]["gpu_render_fps_512_source"] = (
                "avatar bench drive gpu_fps_mono_512: audio features + audio encoder + deformation + "
                "rasterize, batch 1, 512x512")
    (merged_dir / "rasterize.json").write_text(json.dumps(base, indent=2) + "\n")
if mode == "gpu" and drive:
    (merged_dir / "drive-gpu.json").write_text(json.dumps(drive, indent=2) + "\n")
for p in merged_dir.glob("*.json"):
    if mode == "gpu":
        results.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, results / p.name)          # this tree's results (on a device: $OUT brings them back)
record["merged"] = sorted(str(p.relative_to(out)) for p in merged_dir.glob("*.json"))
record["summary"] = {"rasterize": (rast or {}).get("summary"), "drive": (drive or {}).get("summary")}
(out / "gpu-check.json").write_text(json.dumps(record, indent=2) + "\n")
print(json.dumps({"steps": [(s["step"], s["rc"], s["seconds"]) for s in steps], "merged": record["merged"]}))
PY
say "done in $((SECONDS - T0)) s; record: $OUT/gpu-check.json"
exit $FAILED
