"""The sampler's rate limits: ``instr profile -F`` and ``instr dtrace``'s profile-N."""

HZ_MIN, HZ_MAX = 1, 5000
