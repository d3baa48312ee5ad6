"""Memory addressing ops (NTM, DNC, Graves' window), grouped by concept:

  addressing  content addressing, NTM location addressing      (addressing.py)
  allocation  DNC usage, allocation weights, write weights     (allocation.py)
  read/write  erase/add write, weighted read                   (read_write.py)
  links       temporal link update and directional reads       (links.py)
  window      Graves' soft window                              (window.py)
  access      the DNC access step, composed of all the above   (access.py)

Each concept module declares its compiled op pairs once (attnfast/ops/spec.py: fakes, autograd,
the Triton ops) and its public ops as compositions of them written once for every backend
(common.public_op). Compiled-op contract (csrc/schemas.h, memory): float32/float64, contiguous,
explicit shapes, an explicit backward op each.
"""
from __future__ import annotations

from attnfast import dispatch
from attnfast.ops.memory import access, addressing, allocation, links, read_write, window
from attnfast.ops.memory.access import prep_access_step
from attnfast.ops.memory.addressing import prep_content, prep_ntm
from attnfast.ops.memory.allocation import prep_allocation, prep_usage, prep_write_weights
from attnfast.ops.memory.common import EPS, check_tensors
from attnfast.ops.memory.links import prep_directional_read, prep_link_update
from attnfast.ops.memory.read_write import prep_memory_read, prep_memory_write
from attnfast.ops.memory.window import prep_graves, prep_graves_seq

__all__ = [
    "EPS", "OPS", "check_tensors", "prep_access_step", "prep_allocation", "prep_content",
    "prep_directional_read", "prep_graves", "prep_graves_seq", "prep_link_update",
    "prep_memory_read", "prep_memory_write", "prep_ntm", "prep_usage", "prep_write_weights",
]

OPS = {op.name: dispatch.register(op)
       for module in (addressing, allocation, read_write, links, window, access)
       for op in module.PUBLIC_OPS}
