"""Sampled on-CPU profiles: folded stacks, SVG flame graphs, top-N tables.

``instr profile`` samples every thread of the target on a timer of its own
CPU time (agents/src/profile/), unwinds the copied stacks here with the
modules' ``.eh_frame`` and symbolises them. See docs/profile.md.
"""

from instr.profile.model import Profile, parse_folded, render_top, top
from instr.profile.run import ProfileConfig, ProfileResult, run_profile
from instr.profile.session import ProfileSession, SamplerOptions
from instr.profile.svg import render_svg

__all__ = [
    "Profile",
    "ProfileConfig",
    "ProfileResult",
    "ProfileSession",
    "SamplerOptions",
    "parse_folded",
    "render_svg",
    "render_top",
    "run_profile",
    "top",
]
