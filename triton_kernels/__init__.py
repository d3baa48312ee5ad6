"""attnfast's Triton kernels: one module per op family (``attnfast.triton_kernels.<family>``; this
folder ships inside the attnfast package, never as a top-level ``triton_kernels``).

Each module holds ``@triton.jit`` kernels and plain-Python launchers taking and returning
torch tensors. They run on CUDA tensors, or on CPU tensors under the Triton interpreter
(``TRITON_INTERPRET=1`` set before the module is imported). attnfast imports these modules
lazily, only when the Triton backend is selected, so attnfast itself works without triton.
"""
