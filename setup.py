"""Build and install the `avatar` package and its native rasterizer extensions.

Install with `make setup` (or `pip install --no-build-isolation -e .` inside a venv that already
has torch): build isolation would make pip fetch a second, CUDA-enabled torch just to build.

Extensions (sources in cuda/, see DESIGN.md):
  avatar._C_cpu   always: the rasterizer math of cuda/include compiled by the host compiler with OpenMP.
  avatar._C_cuda  when the installed torch is a CUDA build and a CUDA toolkit is found (or
                  AVATAR_BUILD_CUDA=1 forces it / AVATAR_BUILD_CUDA=0 skips it). It is OPTIONAL:
                  a toolkit/torch mismatch or a compile error prints one warning and the install goes
                  on with the CPU extension, unless AVATAR_CUDA_REQUIRED=1 (what `make cuda-build`
                  sets) makes it fatal.

Other knobs: AVATAR_BUILD_CPU=0 skips the CPU extension (make cuda-build builds only _C_cuda);
TORCH_CUDA_ARCH_LIST (torch's) picks the GPU architectures, default: the visible GPU's.
"""
import glob
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CUDA_EXT = "avatar._C_cuda"
CUDA_NVCC_FLAGS = ["-O3", "--use_fast_math", "-lineinfo"]


def _rel(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _flag(name, default):
    return os.environ.get(name, default) == "1"


def _last_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"


def _extensions():
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        sys.exit("setup.py: torch must be installed before building avatar's extensions "
                 "(run `make setup`, or `pip install torch==2.13.0` then "
                 "`pip install --no-build-isolation -e .`).")

    class BuildExt(BuildExtension):
        """torch's BuildExtension, with avatar._C_cuda optional: if torch's pre-build checks (nvcc
        vs torch CUDA version, host compiler bounds) or its compilation fail, warn once and build
        the rest. Failures of any other extension stay fatal."""

        def _cuda_optional(self):
            return not _flag("AVATAR_CUDA_REQUIRED", "0") and any(e.name == CUDA_EXT for e in self.extensions)

        def build_extensions(self):
            self._failed, self._reached_build = [], False
            try:
                super().build_extensions()
            except Exception as e:  # noqa: BLE001 - re-raised unless it is the optional CUDA part
                if self._reached_build or not self._cuda_optional():
                    raise
                self._skip(e, "torch's CUDA toolchain check failed")
                self.extensions = [x for x in self.extensions if x.name != CUDA_EXT]
                super().build_extensions()
            self.extensions = [x for x in self.extensions if x.name not in self._failed]

        def build_extension(self, ext):
            self._reached_build = True
            if ext.name != CUDA_EXT or not self._cuda_optional():
                return super().build_extension(ext)
            try:
                super().build_extension(ext)
            except Exception as e:  # noqa: BLE001 - the CUDA extension is optional
                self._skip(e, "compiling it failed")
                self._failed.append(ext.name)

        def _skip(self, e, what):
            sys.stderr.write(
                f"setup.py: WARNING: {CUDA_EXT} not built ({what}: {_last_line(e)}); installing "
                "without it, rasterize(backend='auto') will use gsplat or the cpu backend. "
                "AVATAR_CUDA_REQUIRED=1 makes this fatal, AVATAR_BUILD_CUDA=0 skips it.\n")

    include = [os.path.join(ROOT, "cuda", "include")]
    exts = []
    if _flag("AVATAR_BUILD_CPU", "1"):
        exts.append(CppExtension(
            "avatar._C_cpu",
            sources=_rel("cuda/csrc/cpu/*.cpp") + _rel("cuda/csrc/bind_cpu.cpp"),
            include_dirs=include,
            extra_compile_args=["-O3", "-fopenmp"],
            extra_link_args=["-fopenmp"],
        ))
    want = os.environ.get("AVATAR_BUILD_CUDA")
    has_cuda = torch.version.cuda is not None and CUDA_HOME is not None
    if want == "1" and not has_cuda:
        why = (f"torch {torch.__version__} is a CPU-only build" if torch.version.cuda is None
               else "no CUDA toolkit found (set CUDA_HOME)")
        if _flag("AVATAR_CUDA_REQUIRED", "0"):
            sys.exit(f"setup.py: cannot build {CUDA_EXT}: {why}")
        sys.stderr.write(f"setup.py: WARNING: {CUDA_EXT} not built ({why}); installing without it.\n")
    elif want == "1" or (want != "0" and has_cuda):
        exts.append(CUDAExtension(
            CUDA_EXT,
            sources=_rel("cuda/csrc/cuda/*.cu") + _rel("cuda/csrc/bind_cuda.cpp"),
            include_dirs=include,
            extra_compile_args={"cxx": ["-O3"], "nvcc": list(CUDA_NVCC_FLAGS)},
        ))
    return exts, {"build_ext": BuildExt}


exts, cmdclass = _extensions()
setup(
    name="avatar",
    version="0.1.0",
    description="Gaussian-splatting personalised talking-head avatars: capture, train, drive, stream.",
    python_requires=">=3.10",
    packages=find_packages(include=["avatar", "avatar.*", "capture", "capture.*"]),
    package_data={"avatar": ["runtime/web/*", "data/*.npy", "prior/weights/*"]},
    ext_modules=exts,
    cmdclass=cmdclass,
    entry_points={"console_scripts": ["avatar=avatar.cli:entrypoint"]},
)
