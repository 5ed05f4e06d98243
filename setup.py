"""Build hook: compile the TypeScript agent into the package with frida.Compiler.

The bundle ships as instr/_agent/agent.js so that users need no Node.js at run
time. Everything else about the package is declared in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithAgent(build_py):
    def run(self) -> None:
        super().run()
        import frida

        root = Path(__file__).resolve().parent / "agents"
        bundle = frida.Compiler().build("src/index.ts", project_root=str(root), type_check="none")
        out = Path(self.build_lib) / "instr" / "_agent" / "agent.js"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(bundle)


setup(cmdclass={"build_py": BuildPyWithAgent})
