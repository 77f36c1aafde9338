"""report.md from its template (kulit.build.report, templates/report.md.j2): the same bytes as
before the template, on golden inputs that reach every section and on the shipped model."""

from __future__ import annotations

import json
import re
from fnmatch import fnmatch
from pathlib import Path

import pytest

from kulit.build.report import TEMPLATE, render_report

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).with_name("data") / "report"
SHIPPED = ROOT / "models" / "kulit-skin8"
# report sections a bare evaluation (no card, sources, bands, skips) leaves out
OPTIONAL = ("per_source", "prediction_share", "per_band", "at_threshold", "run", "skipped",
            "unknown_classes")


def golden_metrics() -> dict:
    return json.loads((GOLDEN / "metrics.json").read_text(encoding="utf-8"))


def test_every_section_renders_as_the_golden_file() -> None:
    """report.md and report-bare.md were written by the f-string renderer the template
    replaced, from metrics.json and card.json beside them (a `|` in a class name, a skipped
    file's newline, a card text only in Indonesian, a band outside the list ...)."""
    card = json.loads((GOLDEN / "card.json").read_text(encoding="utf-8"))
    got = render_report(golden_metrics(), title="tiny on x (test split)", card=card)
    assert got == (GOLDEN / "report.md").read_text(encoding="utf-8")
    bare = {k: v for k, v in golden_metrics().items() if k not in OPTIONAL}
    assert render_report(bare, title="bare") == \
        (GOLDEN / "report-bare.md").read_text(encoding="utf-8")


@pytest.mark.skipif(not (SHIPPED / "report.md").is_file(), reason="no shipped model folder")
def test_the_shipped_report_is_its_metrics_rendered() -> None:
    metrics = json.loads((SHIPPED / "metrics.json").read_text(encoding="utf-8"))
    card = json.loads((SHIPPED / "card.json").read_text(encoding="utf-8"))
    run = metrics["run"]
    title = f"{card['name']} on {Path(run['data']).name} ({run['split']} split)"
    assert render_report(metrics, title=title, card=card) == \
        (SHIPPED / "report.md").read_text(encoding="utf-8")


def test_the_template_ships_in_the_package() -> None:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")  # no tomllib on 3.10
    listed = re.search(r"\[tool\.setuptools\.package-data\]\s*kulit = \[(.*?)\]", text, re.S)
    assert listed is not None
    patterns = re.findall(r'"([^"]+)"', listed.group(1))
    assert any(fnmatch(f"build/templates/{TEMPLATE}", p) for p in patterns)
