"""The web package's shape: sibling routers over shared modules; no class names in page code."""

from __future__ import annotations

import ast
from pathlib import Path

WEB = Path(__file__).resolve().parents[1] / "src" / "kulit" / "web"
ROUTERS = ("routes_api", "routes_pages", "routes_explain")


def kulit_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    mods: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module)
            mods |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            mods |= {a.name for a in node.names}
    return {m for m in mods if m.startswith("kulit")}


def test_routers_import_only_shared_modules() -> None:
    for name in ROUTERS:
        for mod in kulit_imports(WEB / f"{name}.py"):
            assert not any(f"kulit.web.{r}" in mod for r in ROUTERS), (name, mod)
    # app.py mounts the routers and nothing else of theirs
    for mod in kulit_imports(WEB / "app.py"):
        if any(f"kulit.web.{r}" in mod for r in ROUTERS):
            assert mod in {"kulit.web", *(f"kulit.web.{r}" for r in ROUTERS)}, mod


def test_no_class_names_or_advice_in_web_code() -> None:
    """Class names come from the card, the urgent list from answer, words from texts.json."""
    for path in [*WEB.glob("*.py"), *(WEB / "templates").glob("*.html")]:
        if path.name == "schemas.py":  # the OpenAPI descriptions, for programmers
            continue
        text = path.read_text()
        assert "Melanoma" not in text, path
        assert "dokter" not in text and "doctor soon" not in text, path
