"""Probe sets: the YAML front end and the quick CLI front end, both compiling
to the IR in ``instr.probes.ir``. See ``docs/probes.md`` for the format."""

from instr.probes.compiler import (
    ProbeSetFile,
    SetInfo,
    check_file,
    compile_sets,
    load_file,
    load_text,
)
from instr.probes.explain import explain_file
from instr.probes.quick import compile_quick, compile_quick_aggs

__all__ = [
    "ProbeSetFile",
    "SetInfo",
    "check_file",
    "compile_quick",
    "compile_quick_aggs",
    "compile_sets",
    "explain_file",
    "load_file",
    "load_text",
]
