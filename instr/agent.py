"""The agent bundle: built once from ``agents/`` by ``frida.Compiler`` and shipped in
the package as ``instr/_agent/agent.js``. Users need no Node.js at run time.

In a source checkout without a prebuilt bundle (editable installs, development),
the bundle is compiled from ``agents/src`` on first use and cached by content hash.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from instr.errors import AgentError

PACKAGE_BUNDLE = Path(__file__).parent / "_agent" / "agent.js"
SOURCE_ROOT = Path(__file__).resolve().parent.parent / "agents"


def _source_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted((root / "src").rglob("*.ts")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def build_agent(root: Path = SOURCE_ROOT, out: Path | None = None) -> str:
    """Compile ``root/src/index.ts`` into one bundle; write it to ``out`` if given."""
    import frida

    compiler = frida.Compiler()  # type: ignore[no-untyped-call]
    problems: list[str] = []

    def on_diagnostics(diags: list[Any]) -> None:
        problems.extend(str(d.get("text", d)) for d in diags)

    compiler.on("diagnostics", on_diagnostics)
    try:
        bundle: str = compiler.build("src/index.ts", project_root=str(root), type_check="none")
    except frida.NotSupportedError as e:  # pragma: no cover - frida without compiler
        raise AgentError(f"cannot compile the agent: {e}") from e
    except Exception as e:
        detail = "\n".join(problems) or str(e)
        raise AgentError(f"agent build failed:\n{detail}") from e
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(bundle)
    return bundle


def load_bundle() -> str:
    """The agent source to inject: the shipped bundle, or a cached build of the checkout."""
    if (SOURCE_ROOT / "src" / "index.ts").exists() and os.environ.get("INSTR_AGENT") != "package":
        # A source checkout: always run what the source says.
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "instr"
        cached = cache / f"agent-{_source_digest(SOURCE_ROOT)}.js"
        if cached.exists():
            return cached.read_text()
        return build_agent(SOURCE_ROOT, cached)
    if PACKAGE_BUNDLE.exists():
        return PACKAGE_BUNDLE.read_text()
    raise AgentError(
        "the agent bundle is missing from the installed package",
        hint="reinstall instr with pip so that the build step compiles agents/",
    )
