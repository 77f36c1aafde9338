"""The About page's tables, read from the card: test metrics per data source, confident answers
at the threshold, and the trust gate's figures. Every word comes from texts.json via `t`."""

from __future__ import annotations

from typing import Any, TypeGuard

from kulit.serving.i18n import METRICS, PERCENT_METRICS, STRINGS, fmt_num, t

ALL = "all"  # the column / group of every test photo together

# (texts.json key, card.gate.figures key, per group): what the "When it does not answer"
# section lists, in this order; per group = "all" and each source, else the overall rate only.
TRUST_FIGURES = (
    ("trust_not_skin", "not_skin_held_out_rejected", False),
    ("trust_skin_rejected", "skin_test_rejected_as_not_skin", True),
    ("trust_other", "other_held_out_no_confident_class", False),
    ("trust_melanoma", "melanoma_test_see_doctor", True),
    ("trust_confident_right", "confident_right_test", True),
)


def _is_num(v: Any) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _pct(x: float, lang: str) -> str:
    return fmt_num(100 * x, lang, 1) + "%"


def _fmt(key: str, v: float, lang: str) -> str:
    if key == "n":
        return str(int(v))
    if key in PERCENT_METRICS:
        return _pct(v, lang)
    return fmt_num(v, lang, 3)


def _interval(ci: Any) -> list[float] | None:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_is_num(x) for x in ci):
        return [float(ci[0]), float(ci[1])]
    return None


def source_note(name: str, lang: str) -> str | None:
    """What a data source is (texts.json `source_<name>`), or None for a source it does not
    describe (the page then shows the name alone)."""
    key = f"source_{name}"
    return t(lang, key) if key in STRINGS.get(lang, {}) or key in STRINGS["en"] else None


def _columns(metrics: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    per = metrics.get("per_source")
    cols = [(ALL, metrics)]
    if isinstance(per, dict):
        cols += [(str(k), v) for k, v in per.items() if isinstance(v, dict)]
    return cols


def _column_heads(cols: list[tuple[str, dict[str, Any]]], lang: str) -> list[dict[str, Any]]:
    return [{"key": key, "name": t(lang, "about_all") if key == ALL else key,
             "note": None if key == ALL else source_note(key, lang)} for key, _ in cols]


def metric_table(metrics: dict[str, Any], lang: str) -> dict[str, Any]:
    """The headline test numbers in the card, one column for all test photos and, when the card
    has `per_source`, one per data source; each cell a value and its 95% interval."""
    cols = _columns(metrics)
    rows = []
    for key in METRICS:
        cells = []
        for _, m in cols:
            v = m.get(key)
            if not _is_num(v):
                cells.append({"value": "", "ci": ""})
                continue
            raw_ci = m.get("ci95")
            ci = _interval(raw_ci.get(key)) if isinstance(raw_ci, dict) else None
            cells.append({"value": _fmt(key, v, lang),
                          "ci": f"{_fmt(key, ci[0], lang)} – {_fmt(key, ci[1], lang)}"
                          if ci else ""})
        if any(c["value"] for c in cells):
            rows.append({"label": t(lang, f"m_{key}"), "cells": cells})
    return {"columns": _column_heads(cols, lang), "rows": rows}


def confident_rows(metrics: dict[str, Any], lang: str) -> list[dict[str, str]]:
    """Per column of `metric_table`: how many test photos got a confident answer (top
    probability at the card's threshold) and how many of those were right."""
    out = []
    for head, (_, m) in zip(_column_heads(cols := _columns(metrics), lang), cols, strict=True):
        at, n = m.get("at_threshold"), m.get("n")
        if not isinstance(at, dict) or not _is_num(at.get("n")) or not _is_num(n) or not n:
            continue
        k = int(at["n"])
        acc = at.get("accuracy")
        if k and _is_num(acc):
            text = t(lang, "about_confident_row", share=_pct(k / n, lang), k=k, n=int(n),
                     right=_pct(acc, lang), r=round(acc * k))
        else:
            text = t(lang, "about_confident_zero", n=int(n))
        out.append({"name": head["name"], "text": text})
    return out


def _rate(r: Any, lang: str) -> dict[str, str] | None:
    """A gate figure {k, n, rate, ci95} as "97,9% (230/235)" and its interval, or None."""
    if not isinstance(r, dict) or not _is_num(r.get("rate")) or not _is_num(r.get("n")):
        return None
    ci = _interval(r.get("ci95"))
    return {"value": f"{_pct(r['rate'], lang)} ({int(r.get('k', 0))}/{int(r['n'])})",
            "ci": t(lang, "trust_ci", lo=_pct(ci[0], lang), hi=_pct(ci[1], lang)) if ci else ""}


def trust_rows(gate: dict[str, Any], lang: str) -> list[dict[str, Any]]:
    """The "When it does not answer" figures from card.gate.figures (written by `kulit gate`):
    each a label and one or more (group, percentage with k/n, interval); [] without figures."""
    figures = gate.get("figures") if isinstance(gate, dict) else None
    if not isinstance(figures, dict):
        return []
    rows = []
    for text_key, fig_key, per_group in TRUST_FIGURES:
        fig = figures.get(fig_key)
        if not isinstance(fig, dict):
            continue
        if "rate" in fig:  # a single rate, not one per group
            groups: list[tuple[str, Any]] = [(ALL, fig)]
        elif per_group:
            groups = ([(ALL, fig[ALL])] if ALL in fig else []) + [
                (str(g), v) for g, v in fig.items() if g != ALL]
        else:
            groups = [(ALL, fig.get(ALL))]
        values = []
        for g, r in groups:
            shown = _rate(r, lang)
            if shown is not None:
                name = t(lang, "about_all") if g == ALL else g
                values.append({"name": name if len(groups) > 1 else "", **shown})
        if values:
            rows.append({"label": t(lang, text_key), "values": values})
    return rows


# what each band row shows, in order: card.metrics.per_band figures (`kulit evaluate`)
BAND_FIGURES = ("accuracy", "top3_accuracy", "confident", "confident_right")


def band_rows(metrics: dict[str, Any], lang: str) -> dict[str, Any] | None:
    """The "By skin type" tables from card.metrics.per_band: rows of (group, band, photos,
    top-1, top-3, answered confidently, right when confident), each a value with k/n and its
    95% interval; one table by the labelled Fitzpatrick type, one by the type estimated from
    the photo, and the estimate's agreement with the labels. None without per-band figures."""
    pb = metrics.get("per_band") if isinstance(metrics, dict) else None
    if not isinstance(pb, dict):
        return None
    bands = [str(b) for b in pb.get("bands") or []]

    def table(groups: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        if not isinstance(groups, dict):
            return rows
        for group, per in groups.items():
            if not isinstance(per, dict):
                continue
            for band in bands:
                f = per.get(band)
                if not isinstance(f, dict) or not _is_num(f.get("n")):
                    continue
                rows.append({
                    "group": t(lang, "about_all") if group == ALL else str(group),
                    "band": band, "n": int(f["n"]),
                    "cells": [_rate(f.get(k), lang) or {"value": "", "ci": ""}
                              for k in BAND_FIGURES]})
        return rows

    labelled, estimated = table(pb.get("labelled")), table(pb.get("estimated"))
    if not labelled and not estimated:
        return None
    est = pb.get("estimator") if isinstance(pb.get("estimator"), dict) else {}
    a = est.get("agreement_here") if isinstance(est, dict) else None
    agree = None
    if isinstance(a, dict) and _is_num(a.get("n")) and a["n"] and _is_num(a.get("exact")):
        agree = t(lang, "about_bands_agreement", n=int(a["n"]), exact=_pct(a["exact"], lang),
                  within=_pct(a.get("within_one") or 0.0, lang),
                  kappa=fmt_num(float(a.get("kappa_linear") or 0.0), lang, 2))
    return {"labelled": labelled, "estimated": estimated, "agreement": agree}


def shortlist_rows(section: dict[str, Any], lang: str) -> dict[str, Any] | None:
    """The About page's shortlist section from card.shortlist (written by `kulit shortlist`):
    per source and per skin-type band the coverage, mean list length and useful answers, and
    the urgency lines; None without figures."""
    figs = section.get("figures") if isinstance(section, dict) else None
    if not isinstance(figs, dict):
        return None
    rows = []
    for kind in ("per_source", "per_band"):
        for g, f in (figs.get(kind) or {}).items():
            if not isinstance(f, dict):
                continue
            name = (t(lang, "about_all") if g == ALL else
                    t(lang, "about_sl_band", band=g) if kind == "per_band" else str(g))
            size = f.get("mean_size")
            rows.append({"name": name, "translate": kind == "per_source" and g != ALL,
                         "n": f.get("n"),
                         "cells": [_rate(f.get("coverage"), lang) or {"value": "", "ci": ""},
                                   {"value": fmt_num(size, lang, 1) if _is_num(size) else "",
                                    "ci": ""},
                                   _rate(f.get("useful"), lang) or {"value": "", "ci": ""}]})
    u = figs.get("urgency") or {}
    urgent = []
    for key, fig in (("about_sl_melanoma_urgent", (u.get("melanoma_urgent") or {}).get(ALL)),
                     ("about_sl_other_urgent", (u.get("non_melanoma_urgent") or {}).get(ALL)),
                     ("about_sl_not_skin_urgent", u.get("not_skin_urgent")),
                     ("about_sl_people_urgent", u.get("people_urgent"))):
        shown = _rate(fig, lang)
        if shown is not None:
            urgent.append({"label": t(lang, key), **shown})
    level = section.get("level")
    return {"rows": rows, "urgent": urgent,
            "level": round(100 * float(level)) if _is_num(level) else 90}
