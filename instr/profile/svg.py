"""An interactive SVG flame graph, drawn by instr (no Perl, nothing fetched).

One rectangle per frame of the merged stacks: roots at the bottom, width in
proportion to samples, each with a ``<title>`` giving its name, samples and
percent. A few lines of inline JavaScript zoom into a frame on click (click
the background or press Escape to reset) and highlight the frames that match
a search (Ctrl-F or the "Search" label).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from instr.profile.model import Stack

WIDTH = 1200
ROW = 17
PAD = 10
TOP = 40
FONT = 12
CHAR_W = 7.0  # approximate width of a character at FONT
MIN_W = 0.3  # narrower frames are not drawn


@dataclass
class _Node:
    name: str
    count: int = 0
    children: dict[str, _Node] = field(default_factory=dict)


def _tree(stacks: Counter[Stack]) -> _Node:
    root = _Node("all")
    for stack, n in stacks.items():
        root.count += n
        node = root
        for name in stack:
            node = node.children.setdefault(name, _Node(name))
            node.count += n
    return root


def _depth(node: _Node) -> int:
    return 1 + max((_depth(c) for c in node.children.values()), default=0)


def _color(name: str) -> str:
    h = hashlib.md5(name.encode()).digest()
    return f"rgb({205 + h[0] % 50},{h[1] % 180},{h[2] % 55})"


_SCRIPT = """
var frames = document.querySelectorAll('g.f');
function attr(e, n) { return parseFloat(e.getAttribute(n)); }
function label(g) {
  var r = g.querySelector('rect'), t = g.querySelector('text');
  var w = attr(r, 'width'), name = g.getAttribute('data-name');
  var fit = Math.floor((w - 6) / CHAR_W);
  t.textContent = fit < 3 ? '' : (name.length <= fit ? name : name.slice(0, fit - 2) + '..');
}
function reset() {
  frames.forEach(function (g) {
    var r = g.querySelector('rect'), t = g.querySelector('text');
    r.setAttribute('x', g.getAttribute('data-x')); r.setAttribute('width', g.getAttribute('data-w'));
    t.setAttribute('x', attr(r, 'x') + 3); g.style.display = ''; label(g);
  });
}
function zoom(g) {
  var x0 = parseFloat(g.getAttribute('data-x')), w0 = parseFloat(g.getAttribute('data-w'));
  var y0 = parseFloat(g.querySelector('rect').getAttribute('y'));
  var scale = (WIDTH - 2 * PAD) / w0;
  frames.forEach(function (f) {
    var x = parseFloat(f.getAttribute('data-x')), w = parseFloat(f.getAttribute('data-w'));
    var y = parseFloat(f.querySelector('rect').getAttribute('y'));
    var inside = x >= x0 - 1e-6 && x + w <= x0 + w0 + 1e-6;
    var below = y > y0;
    if (!inside && !(below && x <= x0 + 1e-6 && x + w >= x0 + w0 - 1e-6)) { f.style.display = 'none'; return; }
    f.style.display = '';
    var r = f.querySelector('rect'), t = f.querySelector('text');
    var nx = inside ? PAD + (x - x0) * scale : PAD, nw = inside ? w * scale : WIDTH - 2 * PAD;
    r.setAttribute('x', nx); r.setAttribute('width', nw); t.setAttribute('x', nx + 3); label(f);
  });
}
frames.forEach(function (g) { g.addEventListener('click', function (e) { zoom(g); e.stopPropagation(); }); });
document.getElementById('bg').addEventListener('click', reset);
function search() {
  var term = prompt('Search (a regular expression)', '');
  if (term === null) return;
  var re = new RegExp(term), hit = 0, total = parseFloat(document.documentElement.getAttribute('data-total'));
  frames.forEach(function (g) {
    var m = term !== '' && re.test(g.getAttribute('data-name'));
    g.querySelector('rect').style.fill = m ? 'rgb(230,0,230)' : '';
  });
  document.getElementById('matched').textContent = term === '' ? '' : 'Matched: ' + term;
}
document.getElementById('search').addEventListener('click', search);
document.addEventListener('keydown', function (e) {
  if (e.key === 'Escape') reset();
  if ((e.ctrlKey || e.metaKey) && e.key === 'f') { e.preventDefault(); search(); }
});
"""


def render_svg(stacks: Counter[Stack], title: str = "instr profile") -> str:
    """The flame graph of ``stacks`` as an SVG document."""
    root = _tree(stacks)
    total = root.count
    depth = _depth(root)
    height = TOP + depth * ROW + 2 * PAD
    usable = WIDTH - 2 * PAD
    out = [
        '<?xml version="1.0" standalone="no"?>',
        f'<svg version="1.1" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}"'
        f' xmlns="http://www.w3.org/2000/svg" data-total="{total}">',
        "<style>text { font-family: monospace; font-size: "
        f"{FONT}px; pointer-events: none; }} g.f:hover rect {{ stroke: black; stroke-width: 0.5; }}"
        " #search { cursor: pointer; }</style>",
        f'<rect id="bg" x="0" y="0" width="{WIDTH}" height="{height}" fill="rgb(250,250,238)"/>',
        f'<text x="{WIDTH / 2}" y="20" text-anchor="middle" style="font-size:16px">{escape(title)}</text>',
        f'<text id="search" x="{WIDTH - PAD - 60}" y="20">Search</text>',
        f'<text id="matched" x="{PAD}" y="{height - 4}"></text>',
    ]

    def draw(node: _Node, x: float, level: int) -> None:
        w = usable * node.count / total if total else 0.0
        if w < MIN_W:
            return
        y = height - PAD - (level + 1) * ROW
        pct = 100.0 * node.count / total
        tip = f"{node.name} ({node.count} samples, {pct:.2f}%)"
        fit = int((w - 6) // CHAR_W)
        text = (
            "" if fit < 3 else node.name if len(node.name) <= fit else node.name[: fit - 2] + ".."
        )
        out.append(
            f'<g class="f" data-name="{escape(node.name, {chr(34): "&quot;"})}"'
            f' data-x="{x:.2f}" data-w="{w:.2f}"><title>{escape(tip)}</title>'
            f'<rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{ROW - 1}" fill="{_color(node.name)}"'
            f' rx="2" ry="2"/><text x="{x + 3:.2f}" y="{y + ROW - 5}">{escape(text)}</text></g>'
        )
        cx = x
        for child in sorted(node.children.values(), key=lambda c: c.name):
            draw(child, cx, level + 1)
            cx += usable * child.count / total

    draw(root, float(PAD), 0)
    script = _SCRIPT.replace("CHAR_W", str(CHAR_W)).replace("WIDTH", str(WIDTH))
    script = script.replace("PAD", str(PAD))
    out.append(f"<script><![CDATA[{script}]]></script>")
    out.append("</svg>")
    return "\n".join(out) + "\n"
