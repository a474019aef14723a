"""Build imaging and its compiled operators (`imaging._C`).

Decision, printed at build time:
- ``IMAGING_NO_EXT=1``: no extension; imaging runs on its pure-torch references.
- ``FORCE_CUDA=1``, or a CUDA build of torch with a CUDA toolkit found: C++ (CPU) + CUDA kernels.
- otherwise: C++ CPU kernels only (the .cu files are still compile-checked by the tests when nvcc exists).

Install with ``pip install --no-build-isolation -e .`` so the extension builds against the torch that runs it.
"""
import glob
import os

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() not in ("", "0", "false", "no")


def _extensions():
    if _flag("IMAGING_NO_EXT"):
        print("imaging setup: IMAGING_NO_EXT=1 -> no compiled extension (pure-torch fallback)")
        return [], {}
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    import torch

    sources = ["csrc/imaging.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
    cxx = ["-O3", "-g0", "-fvisibility=hidden", "-fno-math-errno", "-fopenmp"]
    with_cuda = _flag("FORCE_CUDA") or (torch.version.cuda is not None and CUDA_HOME is not None)
    if with_cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        print(f"imaging setup: building CPU + CUDA kernels (torch CUDA {torch.version.cuda}, CUDA_HOME={CUDA_HOME})")
        ext = CUDAExtension(
            "imaging._C", sources,
            define_macros=[("IMAGING_WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-lineinfo", "--use_fast_math"]},
        )
    else:
        reason = "torch has no CUDA" if torch.version.cuda is None else "no CUDA toolkit (CUDA_HOME) found"
        print(f"imaging setup: building CPU kernels only ({reason}; FORCE_CUDA=1 forces CUDA)")
        ext = CppExtension("imaging._C", sources, extra_compile_args={"cxx": cxx})
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()
# The shipped weights (imaging/weights/: safetensors files and diffusers folders) are package data: every install
# carries them and `*.pretrained(name)` finds them from any working directory.
WEIGHTS = ["weights/*", "weights/*/*", "weights/*/*/*"]
setup(packages=find_packages(include=["imaging", "imaging.*"]), package_data={"imaging": WEIGHTS},
      ext_modules=ext_modules, cmdclass=cmdclass)
