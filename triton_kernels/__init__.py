"""attnfast's Triton kernels: one module per concept (``attnfast.triton_kernels.<module>``; this
folder ships inside the attnfast package, never as a top-level ``triton_kernels``).

Each module holds ``@triton.jit`` kernels and plain-Python launchers taking and returning
torch tensors. They run on CUDA tensors, or on CPU tensors under the Triton interpreter
(``TRITON_INTERPRET=1`` set before the module is imported). attnfast imports these modules
lazily, only when the Triton backend is selected, so attnfast itself works without triton.

Modules
-------
attention           fused single-head attention: flash kernels, and the entry points
attention_gemm      attention's GEMM strategy for wide heads (library GEMMs + row kernels)
attention_scores    the per-score math both attention strategies share (masks, dropout, dS)
attention_strategy  the rule that picks a strategy (no triton import; the C++ side follows it)
boom                the Boom feed-forward layer
lstm                the LSTM recurrence (one step kernel launch per time step)
addressing          memory content addressing, NTM location addressing
allocation          DNC allocation, DNC usage
links               DNC temporal links with the directional reads
read_write          memory erase/add write, memory read
window              Graves' attention window
_common             helpers every kernel module may use; it imports no kernel module

Which function serves which op is declared once, with the op (attnfast/ops/spec.py:
``KernelOp.triton``).
"""
