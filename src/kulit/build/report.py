"""report.md (a Jinja template, templates/report.md.j2), metrics.json and the three plots
(`kulit.build.plots`) from computed metrics (see `kulit.build.metrics`). Rendering only:
nothing here computes a metric.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kulit.build.metrics import N_BINS, clean_json, round_floats
from kulit.build.plots import REPORT_THRESHOLDS, num, write_plots
from kulit.errors import DataError
from kulit.serving.card import card_text
from kulit.serving.model_dir import METRICS_JSON, REPORT_MD

if TYPE_CHECKING:
    from jinja2 import Template


def _pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def _ci(ci: list[float] | None) -> str:
    return "n/a" if not ci else f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}%"


def _md_cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


TEMPLATE = "report.md.j2"  # in templates/ beside this module (package data)


def _rate(r: dict[str, Any] | None) -> str:
    """A rate {k, n, rate, ci95} as "64.0% (45.1–79.2%)"."""
    if not r or r.get("rate") is None:
        return "n/a"
    return f"{_pct(r['rate'])} ({_ci(r.get('ci95'))})"


def _balanced(f: dict[str, Any]) -> str:
    """A slice's balanced accuracy and its bootstrap interval (none for a handful of photos)."""
    bal, ci = f.get("balanced_accuracy"), f.get("balanced_accuracy_ci95")
    if bal is None:
        return "n/a"
    return f"{_pct(bal)} ({_ci(ci) if ci else 'too few photos'})"


def _has_shortlist(groups: dict[str, Any]) -> bool:
    return any("shortlist" in f for g in groups.values() for f in g.values())


def _shortlist_table(section: dict[str, Any]) -> str:
    from kulit.build.shortlist_text import table_lines

    return "\n".join(table_lines(section))


def _risk_rows(m: dict[str, Any]) -> list[dict[str, Any]]:
    """The risk-coverage rows report.md shows: REPORT_THRESHOLDS and the model's own."""
    rc = {round(r["threshold"], 2): r for r in m["risk_coverage"]}
    rows = [rc[t] for t in REPORT_THRESHOLDS if t in rc]
    at = m.get("at_threshold")
    if at:
        rows = [r for r in rows if round(r["threshold"], 2) != round(at["threshold"], 2)]
        rows = sorted([*rows, {**at, "model": True}], key=lambda r: r["threshold"])
    return rows


@lru_cache(maxsize=1)
def _template() -> Template:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("kulit.build", "templates"), autoescape=False,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                      undefined=StrictUndefined)
    env.filters.update(pct=_pct, ci=_ci, cell=_md_cell, num=num, rate=_rate,
                       balanced=_balanced, g=lambda x: format(x, "g"),
                       en=lambda x: card_text(x, "en")[0], shortlist_table=_shortlist_table)
    env.globals.update(zip=zip, has_shortlist=_has_shortlist, n_bins=N_BINS)
    return env.get_template(TEMPLATE)


def render_report(metrics: dict[str, Any], *, title: str, card: dict[str, Any] | None = None
                  ) -> str:
    """report.md text (templates/report.md.j2): headline with 95% CIs, the paper's Table-3
    per-class table, calibration, per source and skin type, the shortlist, limits."""
    m = metrics
    pb = m.get("per_band") or {}
    est = pb.get("estimator") or {}
    text = _template().render(
        title=title, card=card, m=m, ci=m.get("ci95") or {}, run=m.get("run") or {},
        n_unknown=sum(u["n"] for u in m.get("unknown_classes", [])),
        skipped=m.get("skipped", []),
        n_correct=sum(r["correct"] for r in m["per_class"]),
        risk_rows=_risk_rows(m),
        per_source=m.get("per_source") or {}, share=m.get("prediction_share") or {},
        per_band=pb, bands=list(pb.get("bands") or []), cutoffs=est.get("cutoffs") or [],
        agreement=est.get("agreement_here") or {},
        shortlist=(card.get("shortlist") or {}) if card is not None and
        (card.get("shortlist") or {}).get("figures") else None,
    )
    return text.rstrip("\n") + "\n"


def write_report(metrics: dict[str, Any], out_dir: Path, *, title: str,
                 card: dict[str, Any] | None = None) -> None:
    """Write metrics.json, report.md and the three plots into `out_dir`."""
    out_dir = Path(out_dir)
    clean = round_floats(clean_json(metrics))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(clean, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        (out_dir / METRICS_JSON).write_text(text, encoding="utf-8")
        (out_dir / REPORT_MD).write_text(render_report(clean, title=title, card=card),
                                         encoding="utf-8")
        write_plots(clean, out_dir)
    except OSError as e:
        raise DataError(f"cannot write the report to {out_dir}: {e.strerror or e}") from None



def summary_lines(metrics: dict[str, Any], out: Path) -> list[str]:
    """The few lines `kulit evaluate` prints."""
    m = metrics
    ci = m["ci95"]
    n_unknown = sum(u["n"] for u in m["unknown_classes"])
    lines = [
        f"n {m['n']} images"
        + (f" ({n_unknown} of unknown classes left out)" if n_unknown else "")
        + (f", {len(m.get('skipped', []))} skipped" if m.get("skipped") else ""),
        f"accuracy {_pct(m['accuracy'])} (95% CI {_ci(ci['accuracy'])}), "
        f"balanced accuracy {_pct(m['balanced_accuracy'])} "
        f"(95% CI {_ci(ci['balanced_accuracy'])})",
        f"macro F1 {num(m['macro_f1'])}, top-3 {_pct(m['top3_accuracy'])}, "
        f"ECE {num(m['ece'])}",
        f"report: {Path(out) / REPORT_MD}",
    ]
    return lines
