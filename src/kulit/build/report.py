"""report.md, metrics.json and the three plots (`kulit.build.plots`) from computed metrics
(see `kulit.build.metrics`). Rendering only: nothing here computes a metric.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kulit.build.metrics import N_BINS, clean_json, round_floats
from kulit.build.plots import REPORT_THRESHOLDS, num, write_plots
from kulit.errors import DataError
from kulit.serving.card import card_text
from kulit.serving.model_dir import METRICS_JSON, REPORT_MD


def _pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def _ci(ci: list[float] | None) -> str:
    return "n/a" if not ci else f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}%"


def _md_cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def render_report(metrics: dict[str, Any], *, title: str, card: dict[str, Any] | None = None
                  ) -> str:
    """report.md text: headline with 95% CIs, Table-3 per-class table, calibration, limits."""
    m = metrics
    ci = m.get("ci95") or {}
    lines = [f"# {title}", ""]
    if card is not None:
        lines += ["**Not a diagnosis.** These numbers describe a photo classifier on a small "
                  "data set; a doctor must examine any skin problem that worries you.", ""]
        desc = [f"model `{card.get('name', '?')}`"]
        for key, label in (("backbone", "backbone"), ("recipe", "recipe"),
                           ("temperature", "temperature"), ("threshold", "threshold")):
            if card.get(key) is not None:
                desc.append(f"{label} {card[key]}")
        lines += ["- " + ", ".join(desc)]
    run = m.get("run") or {}
    if run:
        where = f"- data `{run.get('data', '')}`, split **{run.get('split', '')}**"
        if run.get("split_csv"):
            where += f" (from `{run['split_csv']}`)"
        lines.append(where)
    n_unknown = sum(u["n"] for u in m.get("unknown_classes", []))
    skipped = m.get("skipped", [])
    lines += [
        f"- {m['n']} images evaluated; {n_unknown} left out (class unknown to the model); "
        f"{len(skipped)} skipped (unreadable)",
        "",
        "## Headline",
        "",
        "| metric | value | 95% CI (bootstrap over images) |",
        "|---|---:|---:|",
        f"| accuracy | {_pct(m['accuracy'])} | {_ci(ci.get('accuracy'))} |",
        f"| balanced accuracy (mean recall over classes present) | "
        f"{_pct(m['balanced_accuracy'])} | {_ci(ci.get('balanced_accuracy'))} |",
        f"| macro F1 (classes present) | {num(m['macro_f1'])} | |",
        f"| top-3 accuracy | {_pct(m['top3_accuracy'])} | |",
        f"| expected calibration error ({N_BINS} bins) | {num(m['ece'])} | |",
        f"| negative log-likelihood | {num(m['nll'])} | |",
        "",
        "## Per class",
        "",
        "Correct, wrong, total and percentage as in the paper's Table 3, plus precision, "
        "recall and F1. A class with no image in this data shows n/a.",
        "",
        "| class | correct | wrong | total | percentage | precision | recall | F1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in m["per_class"]:
        pct = "n/a" if r["percent"] is None else f"{r['percent']:.1f}%"
        lines.append(
            f"| {_md_cell(r['class'])} | {r['correct']} | {r['wrong']} | {r['total']} | {pct} | "
            f"{num(r['precision'], 2)} | {num(r['recall'], 2)} | {num(r['f1'], 2)} |"
        )
    n_correct = sum(r["correct"] for r in m["per_class"])
    lines.append(
        f"| **all** | {n_correct} | {m['n'] - n_correct} | {m['n']} | {_pct(m['accuracy'])} | "
        f"| | {num(m['macro_f1'], 2)} (macro) |"
    )
    classes = m["classes"]
    lines += [
        "",
        "## Confusion matrix",
        "",
        "Rows: true class; columns: predicted class.",
        "",
        "| true \\ predicted | " + " | ".join(_md_cell(c) for c in classes) + " |",
        "|---|" + "---:|" * len(classes),
    ]
    for name, row in zip(classes, m["confusion_matrix"], strict=True):
        lines.append(f"| {_md_cell(name)} | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "![confusion matrix](confusion_matrix.png)", ""]

    lines += [
        "## Answering only when sure (risk-coverage)",
        "",
        "The model answers only when its top probability is at least the threshold; coverage "
        "is the share of images it answers, accuracy is measured on those.",
        "",
        "| threshold | coverage | accuracy | images answered |",
        "|---:|---:|---:|---:|",
    ]
    rc = {round(r["threshold"], 2): r for r in m["risk_coverage"]}
    rows = [rc[t] for t in REPORT_THRESHOLDS if t in rc]
    at = m.get("at_threshold")
    if at:
        rows = [r for r in rows if round(r["threshold"], 2) != round(at["threshold"], 2)]
        rows = sorted([*rows, {**at, "model": True}], key=lambda r: r["threshold"])
    for r in rows:
        t = f"{r['threshold']:.2f}" + (" (model's threshold)" if r.get("model") else "")
        lines.append(f"| {t} | {_pct(r['coverage'])} | {_pct(r['accuracy'])} | {r['n']} |")
    lines += ["", "![risk-coverage](risk_coverage.png)", ""]

    lines += [
        "## Calibration",
        "",
        f"Expected calibration error {num(m['ece'])} over {N_BINS} equal-width bins of the top "
        "probability (0 is perfect: among answers given with 80% confidence, 80% are right).",
        "",
        "![reliability diagram](reliability.png)",
        "",
    ]
    lines += render_per_source(m)
    lines += render_per_band(m)
    if card is not None and (card.get("shortlist") or {}).get("figures"):
        lines += render_shortlist(card["shortlist"])
    if m.get("unknown_classes"):
        lines += ["## Classes the model does not know", "",
                  "These images were left out of every number above. What the model called them:",
                  ""]
        for u in m["unknown_classes"]:
            said = ", ".join(f"{c} {k}" for c, k in u["predicted"].items())
            noun = "image" if u["n"] == 1 else "images"
            lines.append(f"- {_md_cell(u['class'])}: {u['n']} {noun}; predicted as {said}")
        lines.append("")
    if skipped:
        lines += ["## Skipped files", "", "| file | reason |", "|---|---|"]
        lines += [f"| {_md_cell(s['file'])} | {_md_cell(s['reason'])} |" for s in skipped]
        lines.append("")
    if card is not None:
        limits = card.get("limits") or []
        lines += ["## Known limits", "",
                  "- Not a diagnosis. It can be wrong; a doctor must examine any skin problem "
                  "that worries you."]
        texts = [card_text(x, "en")[0] for x in limits]
        lines += [f"- {x}" for x in texts if "not a diagnosis" not in x.lower()]
        lines.append("")
        data = card.get("data") or {}
        if data:
            lines += ["## Data", ""]
            for key in ("name", "folder", "source", "sources", "licence", "license", "hash"):
                value = data.get(key)
                if not value:
                    continue
                if isinstance(value, list):
                    lines += [f"- {key}:"] + [f"  - {card_text(v, 'en')[0]}" for v in value]
                else:
                    lines.append(f"- {key}: {card_text(value, 'en')[0]}")
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def render_shortlist(section: dict[str, Any]) -> list[str]:
    """The shortlist's figures (card.shortlist, written by `kulit shortlist`) as Markdown."""
    from kulit.build.shortlist_text import table_lines

    cut = ", ".join(f"{c} {v:.3f}" for c, v in section.get("cutoffs", {}).items())
    return ["## Shortlist (conformal, issue 20)", "",
            f"Level {section.get('level')}, method `{section.get('method')}`, fitted on the val "
            f"photos of {', '.join(section.get('tuned_on', {}).get('sources', []))}; cut-offs: "
            f"{cut}. Coverage is the right condition on the list among photos given one; "
            "useful is one or two conditions; each with its Wilson 95% interval.", "",
            *table_lines(section), ""]


def render_per_source(m: dict[str, Any]) -> list[str]:
    """The per-source section: headline metrics per data source, then each source's share of
    predictions per class next to its true share (a source-keyed model over-predicts there)."""
    per = m.get("per_source") or {}
    if not per:
        return []
    lines = [
        "## Per data source",
        "",
        "The same metrics on the images of each data source (the split's `source` column).",
        "",
        "| source | images | accuracy | balanced accuracy | macro F1 | top-3 accuracy | ECE "
        "| answered at the threshold | right when answered |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in per.items():
        at = s.get("at_threshold") or {}
        lines.append(
            f"| {_md_cell(name)} | {s['n']} | {_pct(s['accuracy'])} | "
            f"{_pct(s['balanced_accuracy'])} | {num(s['macro_f1'])} | "
            f"{_pct(s['top3_accuracy'])} | {num(s['ece'])} | "
            f"{_pct(at.get('coverage'))} | {_pct(at.get('accuracy'))} |"
        )
    share = m.get("prediction_share") or {}
    if share:
        names = list(share)
        classes = list(next(iter(share.values())))
        lines += ["", "Share of predictions per class (predicted / true) in each source:", "",
                  "| class | " + " | ".join(_md_cell(n) for n in names) + " |",
                  "|---|" + "---:|" * len(names)]
        for c in classes:
            cells = [f"{_pct(share[n][c]['predicted'])} / {_pct(share[n][c]['true'])}"
                     for n in names]
            lines.append(f"| {_md_cell(c)} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _rate(r: dict[str, Any] | None) -> str:
    """A rate {k, n, rate, ci95} as "64.0% (45.1–79.2%)"."""
    if not r or r.get("rate") is None:
        return "n/a"
    return f"{_pct(r['rate'])} ({_ci(r.get('ci95'))})"


def band_table(groups: dict[str, Any], bands: list[str]) -> list[str]:
    """One Markdown table: a row per (group, band) with every slice figure and its interval."""
    shortlist = any("shortlist" in f for g in groups.values() for f in g.values())
    head = ("| group | band | photos | top-1 | balanced accuracy | top-3 | answered confidently "
            "| right when confident |")
    rule = "|---|---|---:|---:|---:|---:|---:|---:|"
    if shortlist:
        head += " shortlist coverage | mean shortlist size |"
        rule += "---:|---:|"
    lines = [head, rule]
    for name, per in groups.items():
        for band in [*bands, *(b for b in per if b not in bands)]:
            f = per.get(band)
            if f is None:
                continue
            bal = f.get("balanced_accuracy")
            row = (f"| {_md_cell(name)} | {band} | {f['n']} | {_rate(f['accuracy'])} | "
                   + (f"{_pct(bal)} ({_ci(f.get('balanced_accuracy_ci95'))})" if bal is not None
                      else "n/a").replace("(n/a)", "(too few photos)")
                   + f" | {_rate(f['top3_accuracy'])} | {_rate(f['confident'])} | "
                   f"{_rate(f['confident_right'])} |")
            if shortlist:
                sl = f.get("shortlist") or {}
                row += f" {_rate(sl.get('coverage'))} | {num(sl.get('mean_size'), 2)} |"
            lines.append(row)
    return lines


def render_per_band(m: dict[str, Any]) -> list[str]:
    """The per-skin-type section: every figure per Fitzpatrick band where the data's manifest
    gives one (atlas/), and per band estimated from the photo's pixels (ITA°) for every
    source; 95% intervals (Wilson for rates, bootstrap for balanced accuracy)."""
    pb = m.get("per_band") or {}
    if not pb:
        return []
    bands = list(pb.get("bands") or [])
    lines = ["## Per skin type", "",
             "Bands of Fitzpatrick skin types (I–II lightest, V–VI darkest). Small bands have "
             "wide 95% intervals (Wilson for rates, bootstrap for balanced accuracy); read them "
             "before the point values.", ""]
    if pb.get("labelled"):
        lines += ["### Labelled skin type (the photo folder's manifest, e.g. atlas/)", ""]
        lines += [*band_table(pb["labelled"], bands), ""]
    est = pb.get("estimator") or {}
    if pb.get("estimated"):
        cut = est.get("cutoffs") or []
        lines += ["### Estimated skin type (ITA° of the skin around the lesion)", "",
                  "Every photo's band estimated from its pixels (`kulit.build.skintone`: "
                  "individual typology angle"
                  + (f", I–II above {cut[0]:g}°, V–VI at or below {cut[1]:g}°" if len(cut) == 2
                     else "") + "). The estimate describes groups of photos, not a person.", ""]
        lines += [*band_table(pb["estimated"], bands), ""]
    a = est.get("agreement_here") or {}
    if a.get("n"):
        lines += [f"Estimate against the labelled type on these {a['n']} photos: same band "
                  f"{_pct(a['exact'])}, within one band {_pct(a['within_one'])}, Cohen's kappa "
                  f"(linear) {num(a['kappa_linear'])}.", ""]
    return lines


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
