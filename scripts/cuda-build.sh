#!/usr/bin/env bash
# make cuda-build: build avatar._C_cuda for sm_80 + sm_90 against the package registry's CUDA torch,
# link it, import it and check that its functions are registered. Needs the CUDA toolkit (nvcc),
# not a GPU: a CUDA build of torch imports without one.
#
#   AVATAR_CUDA_VENV       the CUDA-torch venv, kept OUTSIDE the clone and reused
#                          (default ~/.cache/avatar/cuda-venv; created on first use, ~2.5 min, 5 GB)
#   AVATAR_CUDA_TORCH      the torch requirement installed there (default torch==2.14.1, cu130)
#   AVATAR_CUDA_BUILD_DIR  build tree (default build/cuda-build; ninja makes a warm rebuild cheap)
#   CUDA_HOME              the toolkit (default /usr/local/cuda: left unset, torch guesses /usr/local
#                          from the nvcc wrapper on PATH and the link fails with `cannot find -lcudart`)
#   TORCH_CUDA_ARCH_LIST   default "8.0;9.0" (A100, H100/H200)
#   AVATAR_ALLOW_SPILLS=1  report local memory (ptxas -v: stack frames, spills) without failing
#
# The build is setup.py's own (AVATAR_BUILD_CPU=0 AVATAR_BUILD_CUDA=1 AVATAR_CUDA_REQUIRED=1), so
# this checks exactly what `make setup` compiles on a GPU machine. Exits non-zero on any failure.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VENV=${AVATAR_CUDA_VENV:-$HOME/.cache/avatar/cuda-venv}
TORCH_SPEC=${AVATAR_CUDA_TORCH:-torch==2.14.1}
BUILD=${AVATAR_CUDA_BUILD_DIR:-$ROOT/build/cuda-build}
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-8.0;9.0}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
PY=${PYTHON:-python3}
say() { echo "cuda-build: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }
t0=$SECONDS

[ -x "$CUDA_HOME/bin/nvcc" ] || die "no nvcc at $CUDA_HOME/bin/nvcc (set CUDA_HOME to a CUDA toolkit)"

# 1. the CUDA-torch venv (once; a marker records what it was made with)
marker="$VENV/.avatar-cuda-venv"
if [ ! -f "$marker" ] || [ "$(cat "$marker")" != "$TORCH_SPEC" ]; then
  say "preparing $VENV with $TORCH_SPEC (first run only)"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$TORCH_SPEC" ninja setuptools wheel numpy
  "$VENV/bin/python" -c 'import sys, torch; sys.exit(0 if torch.version.cuda else
    f"{torch.__version__} is not a CUDA build of torch (set AVATAR_CUDA_TORCH)")' \
    || die "the venv's torch is not a CUDA build"
  echo "$TORCH_SPEC" > "$marker"
fi
say "venv ready ($((SECONDS - t0)) s): $("$VENV/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null)"

# 2. per-kernel register / local-memory report (ptxas -v) for each architecture
mkdir -p "$BUILD"
ptxas_log="$BUILD/ptxas.txt"
IFS=';' read -r -a archs <<< "$TORCH_CUDA_ARCH_LIST"
shopt -s nullglob
cus=(cuda/csrc/cuda/*.cu)
[ ${#cus[@]} -gt 0 ] || die "no .cu files under cuda/csrc/cuda"
gencode=()
for a in "${archs[@]}"; do sm=${a//./}; sm=${sm%+PTX}; gencode+=(-gencode "arch=compute_$sm,code=sm_$sm"); done
# cached by a hash of the kernel sources and headers, so a warm run with unchanged kernels skips it
stamp=$(cat "${cus[@]}" cuda/include/avatar/* | sha1sum | cut -c1-16)-$TORCH_CUDA_ARCH_LIST
if [ "$(cat "$BUILD/ptxas.stamp" 2>/dev/null)" != "$stamp" ]; then
  : > "$ptxas_log"
  for f in "${cus[@]}"; do
    echo "## $f" >> "$ptxas_log"
    "$CUDA_HOME/bin/nvcc" -c -std=c++20 -O3 --use_fast_math -Icuda/include "${gencode[@]}" -Xptxas -v \
      "$f" -o /dev/null >> "$ptxas_log" 2>&1 || { cat "$ptxas_log" >&2; die "nvcc failed on $f"; }
  done
  echo "$stamp" > "$BUILD/ptxas.stamp"
fi
# one line per kernel: registers, stack frame (local-memory arrays), spills
awk '/Compiling entry function/{
       k = "?"
       if (match($0, /[0-9]+[a-z_]+_kernel(I(L[a-z][0-9]+E)+E)?/)) {
         k = substr($0, RSTART, RLENGTH); sub(/^[0-9]+/, "", k)
         if (match(k, /I(L[a-z][0-9]+E)+E$/)) {        # template arguments: <3,1>
           t = substr(k, RSTART + 1, RLENGTH - 2); k = substr(k, 1, RSTART - 1)
           gsub(/L[a-z]/, "", t); gsub(/E/, ",", t); sub(/,$/, "", t); k = k "<" t ">"
         }
       } else if (match($0, /(DeviceRadixSort[A-Za-z]+|Empty)Kernel/)) k = "cub::" substr($0, RSTART, RLENGTH)
       match($0, /for .sm_[0-9]+/); a = substr($0, RSTART + 5, RLENGTH - 5)}
     /bytes stack frame/{st=$1; ss=$5; sl=$9}
     /Used [0-9]+ registers/{match($0, /Used [0-9]+ registers/); r=substr($0, RSTART+5, RLENGTH-15)
       printf "  %-6s %-40s %4s regs %5s B stack %4s B spill-st %4s B spill-ld\n", a, k, r, st, ss, sl}' \
  "$ptxas_log" | sort -u > "$BUILD/ptxas-summary.txt"
say "ptxas -v ($ptxas_log):"; cat "$BUILD/ptxas-summary.txt" >&2
# per-thread arrays indexed at run time land in local memory (a stack frame) just like spills:
# both fail the check
if grep -qE "[1-9][0-9]* B (stack|spill)" "$BUILD/ptxas-summary.txt"; then
  grep -E "[1-9][0-9]* B (stack|spill)" "$BUILD/ptxas-summary.txt" >&2
  [ "${AVATAR_ALLOW_SPILLS:-0}" = 1 ] || die "kernels above use local memory (AVATAR_ALLOW_SPILLS=1 to allow)"
fi

# 3. build avatar._C_cuda with setup.py (ninja: a warm rebuild recompiles only what changed)
say "building avatar._C_cuda for $TORCH_CUDA_ARCH_LIST (MAX_JOBS=$MAX_JOBS)"
t1=$SECONDS
AVATAR_BUILD_CPU=0 AVATAR_BUILD_CUDA=1 AVATAR_CUDA_REQUIRED=1 \
  "$VENV/bin/python" setup.py -q build_ext --build-lib "$BUILD/lib" --build-temp "$BUILD/temp" \
  > "$BUILD/build.log" 2>&1 || { tail -n 40 "$BUILD/build.log" >&2; die "building avatar._C_cuda (log: $BUILD/build.log)"; }
say "built in $((SECONDS - t1)) s"
for a in "${archs[@]}"; do
  sm=${a//./}; sm=${sm%+PTX}
  grep -q "code=sm_$sm" "$BUILD/temp/build.ninja" || die "build.ninja has no code=sm_$sm"
done

# 4. import it (no GPU needed) and check that every entry point is registered
"$VENV/bin/python" -I - "$BUILD/lib" <<'PY' || die "import check"
import importlib, sys
import torch  # loads libtorch / libc10_cuda the extension links against
sys.path.insert(0, sys.argv[1])
m = importlib.import_module("avatar._C_cuda")
need = ["project_fwd", "project_bwd", "sh_fwd", "sh_bwd", "raster_fwd", "raster_bwd", "hashgrid_fwd", "hashgrid_bwd"]
missing = [n for n in need if not callable(getattr(m, n, None))]
if missing:
    sys.exit(f"avatar._C_cuda lacks {missing}")
print(f"cuda-build: imported {m.__file__} (torch {torch.__version__}); registered: {', '.join(need)}",
      file=sys.stderr)
PY
say "ok in $((SECONDS - t0)) s"
