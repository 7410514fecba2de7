"""Triton kernels of deepfast (installed as deepfast.kernels from the top-level kernels/ folder)."""
