#!/usr/bin/env bash
# Compile every CUDA kernel source with `nvcc -c` (kernel sources include no torch headers, so
# this needs only the CUDA toolkit, not a GPU). Fails on the first error.
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-nvcc}
if ! command -v "$NVCC" >/dev/null; then
  echo "cuda-check: nvcc not found (set NVCC=/path/to/nvcc)" >&2; exit 1
fi
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
shopt -s nullglob
files=(cuda/csrc/cuda/*.cu)
[ ${#files[@]} -gt 0 ] || { echo "cuda-check: no .cu files under cuda/csrc/cuda" >&2; exit 1; }
for f in "${files[@]}"; do
  echo "nvcc -c $f"
  "$NVCC" -c -std=c++20 -O3 -Icuda/include -arch=sm_80 "$f" -o "$out/$(basename "$f").o"
done
echo "cuda-check: ${#files[@]} file(s) compiled"
