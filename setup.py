"""Build fastdarts: the Python package, the Triton kernels (shipped as
``fastdarts.kernels``) and the C++/CUDA extension ``fastdarts._C``.

Build switches (environment variables):
  FASTDARTS_SKIP_CUDA_BUILD=1  never build the CUDA sources
  FORCE_CUDA=1                 build the CUDA sources even without a visible GPU
  FASTDARTS_SKIP_EXT=1         build no extension at all (pure Python)

Without torch importable at build time (an isolated build), the package is
installed pure-Python and the C++ paths fall back to the reference/Triton
backends at run time.  Use ``pip install --no-build-isolation .`` after
installing torch to get the extension.
"""

import glob
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes")


def _extensions():
    if _flag("FASTDARTS_SKIP_EXT"):
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        print("fastdarts: torch is not importable at build time; installing without the C++ "
              "extension (use `pip install --no-build-isolation .` to build it)", file=sys.stderr)
        return [], {}

    def files(*parts):
        return [os.path.relpath(p, ROOT) for p in sorted(glob.glob(os.path.join(ROOT, "csrc", *parts)))]

    sources = files("*.cpp") + files("cpu", "*.cpp")
    cuda_sources = files("cuda", "*.cu")

    want_cuda = not _flag("FASTDARTS_SKIP_CUDA_BUILD") and CUDA_HOME is not None and (
        _flag("FORCE_CUDA") or torch.cuda.is_available())
    cxx = ["-O3", "-std=c++17"]
    link = []
    if sys.platform.startswith("linux"):
        # at::parallel_for is inline: without -fopenmp our CPU kernels run on one thread
        cxx.append("-fopenmp")
        link.append("-fopenmp")
    if want_cuda:
        nvcc = ["-O3", "-std=c++17", "--use_fast_math", "-lineinfo",
                "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__"]
        if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
        ext = CUDAExtension("fastdarts._C", sources + cuda_sources,
                            define_macros=[("FASTDARTS_WITH_CUDA", None)],
                            extra_compile_args={"cxx": cxx, "nvcc": nvcc}, extra_link_args=link)
    else:
        ext = CppExtension("fastdarts._C", sources, extra_compile_args={"cxx": cxx},
                           extra_link_args=link)
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()

setup(
    packages=find_packages(include=["fastdarts", "fastdarts.*"]) + ["fastdarts.kernels"],
    package_dir={"fastdarts.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
