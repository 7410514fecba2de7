"""deepfast's compiled kernels (csrc/deepfast.cpp): build information.

The ops themselves are registered with the dispatcher as ``torch.ops.deepfast.*`` and reached
through ``deepfast.ops``; this module only says how it was built.
"""

version: str
"""The deepfast version it was built from (pyproject.toml), e.g. "0.1.0"."""

backends: tuple[str, ...]
"""The kernels compiled in: ("cpp",) or ("cpp", "cuda")."""

cuda_archs: str
"""TORCH_CUDA_ARCH_LIST of a CUDA build, e.g. "8.0;9.0"; "" without CUDA kernels."""

openmp: bool
"""Whether the CPU kernels were compiled with OpenMP."""

torch_version: str
"""The torch it was built against, e.g. "2.13.0+cpu" (it must match the torch it is imported beside)."""

cpu_clones: tuple[str, ...]
"""The x86-64 levels the CPU loops are compiled for, best first; the loader runs the best the CPU has:
("x86-64-v4", "x86-64-v3", "default"), or ("x86-64-v3", "default") for a DEEPFAST_CPU_ISA=avx2 build."""

def num_threads() -> int:
    """Intra-op threads the CPU kernels use (``at::get_num_threads()``)."""
