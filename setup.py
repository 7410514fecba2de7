"""Build of deepfast and its compiled extension deepfast._C.

Environment:
  DEEPFAST_NO_EXT=1      pure-Python install (the torch and Triton backends only)
  DEEPFAST_CUDA=0|1      force the CUDA kernels off/on (default: on when torch has CUDA and nvcc is found)
  TORCH_CUDA_ARCH_LIST   CUDA architectures (default: the visible GPUs, else "8.0;9.0" for A100/H100)
  DEEPFAST_CPU_ISA=avx2  leave the AVX-512 versions of the CPU loops out (to measure what an AVX2-only CPU
                         runs, with ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 for torch)
  MAX_JOBS               parallel compile jobs (ninja)
"""

import glob
import os
import tomllib

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    VERSION = tomllib.load(f)["project"]["version"]


def _cuda_wanted(torch, cuda_home) -> bool:
    flag = os.environ.get("DEEPFAST_CUDA")
    if flag == "0":
        return False
    possible = torch.version.cuda is not None and cuda_home is not None
    if flag == "1" and not possible:
        raise RuntimeError(
            "DEEPFAST_CUDA=1 but the CUDA kernels cannot be built: "
            + ("this torch has no CUDA" if torch.version.cuda is None else "nvcc not found (set CUDA_HOME)")
        )
    return possible


def _cuda_include_dirs() -> list[str]:
    """Headers of the CUDA runtime that pip-installed CUDA builds of torch ship (nvidia/cu*/include)."""
    try:
        import nvidia
    except ImportError:
        return []
    return sorted(d for p in nvidia.__path__ for d in glob.glob(os.path.join(p, "cu*", "include")))


def extensions():
    if os.environ.get("DEEPFAST_NO_EXT") == "1":
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    with_cuda = _cuda_wanted(torch, CUDA_HOME)
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    macros = [("DEEPFAST_VERSION", f'"{VERSION}"'), ("DEEPFAST_TORCH_VERSION", f'"{torch.__version__}"')]
    if os.environ.get("DEEPFAST_CPU_ISA") == "avx2":
        macros.append(("DEEPFAST_NO_AVX512", None))
    # -fno-trapping-math lets the branch-free selects of the kernels vectorise (no value changes).
    cxx = ["-O3", "-fopenmp", "-fno-trapping-math", "-fdiagnostics-color=always"]
    kwargs = dict(include_dirs=[os.path.join(ROOT, "csrc")], extra_link_args=["-fopenmp"])
    if with_cuda:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
        archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "visible GPUs")
        macros += [("DEEPFAST_WITH_CUDA", None), ("DEEPFAST_CUDA_ARCHS", f'"{archs}"')]
        kwargs["include_dirs"] += _cuda_include_dirs()
        ext = CUDAExtension(
            "deepfast._C",
            sources + sorted(glob.glob("csrc/cuda/*.cu")),
            define_macros=macros,
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-lineinfo", "--expt-relaxed-constexpr"]},
            **kwargs,
        )
    else:
        ext = CppExtension("deepfast._C", sources, define_macros=macros, extra_compile_args={"cxx": cxx}, **kwargs)
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = extensions()
setup(
    packages=[
        "deepfast",
        "deepfast.ops",
        "deepfast.nn",
        "deepfast.losses",
        "deepfast.data",
        "deepfast.models",
        "deepfast.train",
        "deepfast.demo",
        "deepfast.attacks",
        "deepfast.defenses",
        "deepfast.cli",
        "deepfast.kernels",
    ],
    package_dir={"deepfast.kernels": "kernels"},
    package_data={"deepfast": ["py.typed", "_C.pyi"]},  # PEP 561: the package and its compiled module are typed
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
