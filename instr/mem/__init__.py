"""Memory monitoring: allocation accounting, leak reports with stacks, reads of target memory.

``instr mem`` tracks every allocator call with a stack id inside the target
(agents/src/mem/) and reports here; ``instr peek`` reads typed values.
See docs/memory.md.
"""

from instr.mem.model import Frame, MemReport, StackStat
from instr.mem.peek import PeekSpec, parse_peek
from instr.mem.run import MemConfig, run_mem

__all__ = ["Frame", "MemConfig", "MemReport", "PeekSpec", "StackStat", "parse_peek", "run_mem"]
