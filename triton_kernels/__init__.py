"""attnfast's Triton kernels: one module per op family (``triton_kernels.<family>``).

Each module holds ``@triton.jit`` kernels and plain-Python launchers taking and returning
torch tensors. They run on CUDA tensors, or on CPU tensors under the Triton interpreter
(``TRITON_INTERPRET=1`` set before the module is imported). attnfast imports these modules
lazily, only when the Triton backend is selected, so attnfast itself works without triton.
"""
