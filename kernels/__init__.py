"""Triton kernels of fastdarts (installed as ``fastdarts.kernels``): @triton.jit kernels
and thin launchers only; no autograd and no fastdarts imports."""
