"""instr dtrace: a D subset compiled onto the probe IR (see docs/dtrace.md)."""
