"""``hexdump -C``-style lines: offset, 16 bytes in hex, printable ASCII."""

from __future__ import annotations


def hexdump(data: bytes, base: int = 0, width: int = 16) -> str:
    """Lines of ``width`` bytes: the address (``base`` + offset), hex in two halves, ASCII."""
    lines = []
    for off in range(0, len(data), width):
        chunk = data[off : off + width]
        left = " ".join(f"{b:02x}" for b in chunk[: width // 2])
        right = " ".join(f"{b:02x}" for b in chunk[width // 2 :])
        hexes = f"{left}  {right}" if right else left
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{base + off:016x}  {hexes:<{width * 3}}  |{text}|")
    return "\n".join(lines)
