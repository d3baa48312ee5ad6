"""Compiles the Triton LSTM step kernels for sm_90 with their GPU launch configuration (no GPU
needed: triton.compile + the cuobjdump triton ships) and prints one line per kernel and dtype:
`<kernel> <dtype> REG:<n> STACK:<bytes>`. Run in a process WITHOUT TRITON_INTERPRET (under the
interpreter @triton.jit functions cannot be compiled); tests/test_lstm_triton.py runs it."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

assert os.environ.get("TRITON_INTERPRET") != "1", "run without TRITON_INTERPRET"

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from attnfast.triton_kernels import lstm as L  # noqa: E402

CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def usage(kernel) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        out = subprocess.run([CUOBJDUMP, "-res-usage", f.name], capture_output=True, text=True,
                             check=True).stdout
    regs, stack = (re.search(rf"{key}:(\d+)", out).group(1) for key in ("REG", "STACK"))
    return f"REG:{regs} STACK:{stack}"


def main(B: int = 64, H: int = 1024) -> None:
    target = GPUTarget("cuda", 90, 32)
    for dt in ("fp32", "bf16", "fp16"):
        p = "*" + dt
        cfg = L._config(B, H, "BLOCK_K")
        opts = {k: cfg.pop(k) for k in ("num_warps", "num_stages")}
        sig = dict(gx_ptr=p, h_prev_ptr=p, c_prev_ptr="*fp32", w_ptr=p, h_ptr=p, c_ptr="*fp32",
                   gates_ptr=p, B="i32", H="i32", SAVE_GATES="constexpr", UPCAST="constexpr",
                   BLOCK_B="constexpr", BLOCK_J="constexpr", BLOCK_K="constexpr")
        k = triton.compile(ASTSource(L._lstm_fwd_step_kernel, sig,
                                     constexprs=dict(SAVE_GATES=True, UPCAST=False, **cfg)),
                           target=target, options=opts)
        print("forward", dt, usage(k), flush=True)
        cfg = L._config(B, H, "BLOCK_R")
        opts = {k: cfg.pop(k) for k in ("num_warps", "num_stages")}
        sig = dict(grad_h_ptr=p, w_ptr=p, dA_next_ptr="*fp32", gates_ptr=p, c_ptr="*fp32",
                   c_prev_ptr="*fp32", grad_c_ptr="*fp32", dc_ptr="*fp32", dA_ptr="*fp32",
                   grad_gx_ptr=p, grad_h0_ptr=p, grad_c0_ptr=p, B="i32", H="i32",
                   HAS_NEXT="constexpr", HAS_GRAD_C="constexpr", FINAL="constexpr", BLOCK_B="constexpr", BLOCK_J="constexpr",
                   BLOCK_R="constexpr")
        for final in (False, True):
            k = triton.compile(ASTSource(L._lstm_bwd_step_kernel, sig,
                                         constexprs=dict(HAS_NEXT=True, HAS_GRAD_C=not final,
                                                         FINAL=final, **cfg)),
                               target=target, options=opts)
            print("backward_final" if final else "backward", dt, usage(k), flush=True)


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
