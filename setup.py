"""Build and install the `avatar` package and its native rasterizer extensions.

Install with `make setup` (or `pip install --no-build-isolation -e .` inside a venv that already
has torch): build isolation would make pip fetch a second, CUDA-enabled torch just to build.

Extensions (sources in cuda/, see DESIGN.md):
  avatar._C_cpu   always: the rasterizer math of cuda/include compiled by the host compiler with OpenMP.
  avatar._C_cuda  when the installed torch is a CUDA build and a CUDA toolkit is found (or
                  AVATAR_BUILD_CUDA=1 forces it / AVATAR_BUILD_CUDA=0 skips it).
"""
import glob
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _rel(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _extensions():
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        sys.exit("setup.py: torch must be installed before building avatar's extensions "
                 "(run `make setup`, or `pip install torch==2.13.0` then "
                 "`pip install --no-build-isolation -e .`).")
    include = [os.path.join(ROOT, "cuda", "include")]
    exts = [CppExtension(
        "avatar._C_cpu",
        sources=_rel("cuda/csrc/cpu/*.cpp") + _rel("cuda/csrc/bind_cpu.cpp"),
        include_dirs=include,
        extra_compile_args=["-O3", "-fopenmp", "-std=c++17"],
        extra_link_args=["-fopenmp"],
    )]
    want = os.environ.get("AVATAR_BUILD_CUDA")
    has_cuda = torch.version.cuda is not None and CUDA_HOME is not None
    if want == "1" or (want != "0" and has_cuda):
        exts.append(CUDAExtension(
            "avatar._C_cuda",
            sources=_rel("cuda/csrc/cuda/*.cu") + _rel("cuda/csrc/bind_cuda.cpp"),
            include_dirs=include,
            extra_compile_args={"cxx": ["-O3", "-std=c++17"],
                                "nvcc": ["-O3", "--use_fast_math", "-std=c++17"]},
        ))
    return exts, {"build_ext": BuildExtension}


exts, cmdclass = _extensions()
setup(
    name="avatar",
    version="0.1.0",
    description="Gaussian-splatting personalised talking-head avatars: capture, train, drive, stream.",
    python_requires=">=3.10",
    packages=find_packages(include=["avatar", "avatar.*", "capture", "capture.*"]),
    package_data={"avatar": ["apps/web/*", "data/*.npy"]},
    ext_modules=exts,
    cmdclass=cmdclass,
    entry_points={"console_scripts": ["avatar=avatar.cli:entrypoint"]},
)
