"""The fast tier: probe IR -> C for CModule (emitter, runtime, signatures)."""
