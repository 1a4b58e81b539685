#!/usr/bin/env bash
# Download the wheels that the GPU machine lacks into ONE folder that travels with a device run
# (that machine has CUDA torch, nvcc and Python 3.12 but no package registry, and a run carries at
# most 64 MiB). Run it here, then on the device: scripts/gpu-check.sh (it installs from the folder).
#
#   scripts/gpu-wheels.sh [DEST]          DEST default .whl/ (git-ignored: pass carry [".whl"])
#   AVATAR_GPU_PYTHON=3.12                target Python version
#   AVATAR_EXTRA_WHEELS="mediapipe==0.10.21"   more requirements (space separated)
#   AVATAR_WHEELS_LIMIT_MB=64             fail when the folder is larger
#
# Pure-Python and manylinux wheels only, no dependency resolution (--no-deps): the list below is
# the closure of what `avatar` needs beyond torch/numpy that a CUDA-torch image usually lacks.
# Pins keep numpy 1.x compatible (plyfile 1.0.x) and the folder small (imageio-ffmpeg 0.5.1 is
# 27 MB, 0.8.x 68 MB). scipy/opencv/matplotlib are not included (35-60 MB each): gpu-check
# reports them when missing and runs what does not need them.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=${1:-$ROOT/.whl}
PYVER=${AVATAR_GPU_PYTHON:-3.12}
LIMIT_MB=${AVATAR_WHEELS_LIMIT_MB:-64}
PIP=${PIP:-python3 -m pip}
WHEELS=(
  tyro==1.0.17 docstring-parser==0.18.0 typeguard==4.6.1
  gsplat==1.5.3 jaxtyping==0.3.11 wadler-lindig==0.1.8 rich==15.0.0 markdown-it-py==4.3.0 mdurl==0.1.2
  pygments==2.21.0 ninja==1.13.2
  imageio-ffmpeg==0.5.1 plyfile==1.0.3 websockets==15.0.1 pyyaml==6.0.2 tqdm==4.67.1
  pytest==8.3.5 pluggy==1.5.0 iniconfig==2.1.0
)
# shellcheck disable=SC2206
[ -n "${AVATAR_EXTRA_WHEELS:-}" ] && WHEELS+=(${AVATAR_EXTRA_WHEELS})
mkdir -p "$DEST"
$PIP download --disable-pip-version-check -q --python-version "$PYVER" --implementation cp \
  --only-binary=:all: --no-deps \
  --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64 --platform any \
  -d "$DEST" "${WHEELS[@]}"
printf '%s\n' "${WHEELS[@]}" > "$DEST/requirements.txt"
bytes=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
mb=$(( (bytes + 1048575) / 1048576 ))
echo "gpu-wheels: $(ls "$DEST"/*.whl | wc -l) wheels, ${mb} MiB in $DEST (install: pip install --no-index --no-deps --find-links $DEST -r $DEST/requirements.txt)"
[ "$mb" -le "$LIMIT_MB" ] || { echo "gpu-wheels: FAILED: ${mb} MiB > ${LIMIT_MB} MiB (a device run carries at most 64 MiB)" >&2; exit 1; }
