"""The house as the README describes it: the Python API block and the docstring examples run as written,
the console script is the CLI, and no module of the engine imports one that imports it back."""

from __future__ import annotations

import ast
import doctest
import importlib
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCTESTED = [
    "qrp_core.study",
    "qrp_core.metrics",
    "qrp_core.quantize",
    "qrp_core.probe",
    "qrp_core.pipeline",
    "qrp_core.analyses.pairs",
]


@pytest.mark.parametrize("module", DOCTESTED)
def test_docstring_examples_run(module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write a study or a cache write here
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(importlib.import_module(module), optionflags=flags, verbose=False)
    assert result.attempted > 0, f"{module} has no example"
    assert result.failed == 0


def test_readme_python_api_runs(tmp_path, monkeypatch, capsys):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API") : text.index("## Layout")]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md: Python API", "exec"), {})
    printed = capsys.readouterr().out
    assert {"combo-net", "shape-net", "noise-net", "nmi_mean", "difference"} <= set(re.findall(r"[\w-]+", printed))


def test_the_qrp_console_script_is_the_cli():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, name = scripts["qrp"].partition(":")
    from qrp_core.cli import main

    assert getattr(importlib.import_module(module), name) is main


def _imports(path: Path, module: str, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that ``module`` imports, at its top or inside functions."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # `from . import verbs`
    return found & modules - {module}


def test_no_module_imports_one_that_imports_it_back():
    files = {p: ".".join(p.relative_to(ROOT).with_suffix("").parts) for p in (ROOT / "qrp_core").rglob("*.py")}
    names = {path: name.removesuffix(".__init__") for path, name in files.items()}
    modules = set(names.values())
    graph = {name: _imports(path, name, modules) for path, name in names.items()}
    assert graph["qrp_core.pipeline"] >= {"qrp_core.probe", "qrp_core.quantize"}  # the graph is read

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                if nxt == goal:
                    return True
                seen.add(nxt)
                todo.append(nxt)
        return False

    cycles = sorted(f"{a} -> {b}" for a in graph for b in graph[a] if reaches(b, a))
    assert not cycles
