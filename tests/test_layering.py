"""The layout's contract: serving and web run without torch or the build code, imports flow one
way, and no module imports itself back. Read from the source (every import, lazy ones too) and
checked in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import kulit

SRC = Path(kulit.__file__).parent

# package -> packages it must never import (directly or in a function)
FORBIDDEN = {
    "kulit.serving": ("kulit.training", "kulit.build", "kulit.dataprep", "kulit.web",
                      "kulit.cli", "torch", "torchvision"),
    "kulit.web": ("kulit.training", "kulit.build", "kulit.dataprep", "kulit.cli", "torch",
                  "torchvision"),
    "kulit.dataprep": ("kulit.training", "kulit.build", "kulit.web", "kulit.cli", "torch"),
    "kulit.build": ("kulit.web", "kulit.cli"),
    "kulit.training": ("kulit.web", "kulit.cli"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING" or (
        isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")


def imports_of(path: Path, top_level_only: bool = False) -> set[str]:
    """Modules a file imports (`from a import b` counts as a.b when that is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking_only(child):
                continue
            inner = top and not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef |
                                           ast.Lambda)
            if top_level_only and not inner:
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.add(child.module)
                for a in child.names:
                    sub = f"{child.module}.{a.name}"
                    if _is_module(sub):
                        found.add(sub)
            visit(child, inner)

    visit(tree, True)
    return found


def _is_module(name: str) -> bool:
    if not name.startswith("kulit."):
        return False
    rel = Path(*name.split(".")[1:])
    return (SRC / rel).with_suffix(".py").is_file() or (SRC / rel / "__init__.py").is_file()


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_no_package_imports_what_its_layer_forbids() -> None:
    broken = []
    for name, path in all_modules().items():
        for package, banned in FORBIDDEN.items():
            if not _under(name, package):
                continue
            for imported in imports_of(path):
                if any(_under(imported, b) for b in banned):
                    broken.append(f"{name} imports {imported}")
    assert broken == []


def test_no_import_cycles() -> None:
    mods = all_modules()
    graph = {n: {i for i in imports_of(p, top_level_only=True) if i in mods and i != n}
             for n, p in mods.items()}
    # a package's __init__ runs before its modules: importing kulit.x.y imports kulit.x
    cycles = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def walk(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycles.append(" -> ".join(stack[stack.index(m):] + [m]))
            elif m not in state:
                walk(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            walk(n)
    assert cycles == []


def test_the_reader_sees_lazy_imports_and_ignores_type_only_ones(tmp_path: Path) -> None:
    f = SRC / "serving" / "model_dir.py"
    assert "kulit.serving.card" in imports_of(f, top_level_only=True)
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n"
                   "def f():\n    import kulit.training.train\n")
    assert imports_of(src) == {"typing", "kulit.training.train"}
    assert imports_of(src, top_level_only=True) == {"typing"}


def test_every_serving_and_web_module_imports_without_torch_or_training() -> None:
    names = sorted(n for n in all_modules() if _under(n, "kulit.serving") or
                   _under(n, "kulit.web"))
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision') or\n"
        "             m.startswith(('kulit.training', 'kulit.build', 'kulit.dataprep')))\n"
        "print(len(sys.modules)); assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(names) > 20
