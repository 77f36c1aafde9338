"""report.md, metrics.json and the three plots from computed metrics (see `kulit.build.metrics`).

Rendering only: nothing here computes a metric. matplotlib is imported only when plotting.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from kulit.build.metrics import N_BINS, clean_json, round_floats
from kulit.errors import DataError
from kulit.serving.card import card_text
from kulit.serving.model_dir import METRICS_JSON, PLOTS, REPORT_MD

REPORT_THRESHOLDS = (0.0, 0.3, 0.5, 0.7, 0.9)  # rows of the risk-coverage table in report.md


def _pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def _num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


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
        f"| macro F1 (classes present) | {_num(m['macro_f1'])} | |",
        f"| top-3 accuracy | {_pct(m['top3_accuracy'])} | |",
        f"| expected calibration error ({N_BINS} bins) | {_num(m['ece'])} | |",
        f"| negative log-likelihood | {_num(m['nll'])} | |",
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
            f"{_num(r['precision'], 2)} | {_num(r['recall'], 2)} | {_num(r['f1'], 2)} |"
        )
    n_correct = sum(r["correct"] for r in m["per_class"])
    lines.append(
        f"| **all** | {n_correct} | {m['n'] - n_correct} | {m['n']} | {_pct(m['accuracy'])} | "
        f"| | {_num(m['macro_f1'], 2)} (macro) |"
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
        f"Expected calibration error {_num(m['ece'])} over {N_BINS} equal-width bins of the top "
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
            f"{_pct(s['balanced_accuracy'])} | {_num(s['macro_f1'])} | "
            f"{_pct(s['top3_accuracy'])} | {_num(s['ece'])} | "
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
                row += f" {_rate(sl.get('coverage'))} | {_num(sl.get('mean_size'), 2)} |"
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
                  f"(linear) {_num(a['kappa_linear'])}.", ""]
    return lines


def _plot_confusion(metrics: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    classes = metrics["classes"]
    cm = np.asarray(metrics["confusion_matrix"], dtype=float).reshape(len(classes), len(classes))
    # colour by share of the true class so small classes are as visible as large ones
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    side = max(5.0, 0.75 * len(classes) + 2.5)
    fig = Figure(figsize=(side, side * 0.9))
    ax = fig.add_subplot()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=9,
                    color="white" if share[i, j] > 0.55 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix (counts, n={metrics['n']}; colour = share of true class)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _plot_reliability(metrics: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    bins = metrics["reliability"]["bins"]
    width = 1.0 / len(bins)
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    full = [b for b in bins if b["count"]]
    ax.bar([b["lo"] for b in full], [b["accuracy"] for b in full], width=width, align="edge",
           color="#4c72b0", edgecolor="black", linewidth=0.5, label="accuracy")
    ax.plot([b["confidence"] for b in full], [b["accuracy"] for b in full], "o", color="#dd8452",
            markersize=4, label="mean confidence")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    for b in full:  # image count per bin, inside the foot of its bar
        ax.text(b["lo"] + width / 2, 0.015, str(b["count"]), ha="center", fontsize=7,
                color="white" if b["accuracy"] > 0.05 else "black")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability (ECE {_num(metrics['ece'])}, n={metrics['n']})")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _plot_risk_coverage(metrics: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    pts = [r for r in metrics["risk_coverage"] if r["accuracy"] is not None]
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    ax.plot([r["coverage"] for r in pts], [r["accuracy"] for r in pts], "o-", color="#4c72b0",
            markersize=3)
    last: tuple[float, float] | None = None
    for r in pts:
        xy = (r["coverage"], r["accuracy"])
        near = last is not None and abs(xy[0] - last[0]) + abs(xy[1] - last[1]) < 0.06
        if round(r["threshold"], 2) in REPORT_THRESHOLDS and not near:
            ax.annotate(f"≥{r['threshold']:.1f}", xy, textcoords="offset points",
                        xytext=(4, -10), fontsize=8)
            last = xy
    at = metrics.get("at_threshold")
    if at and at.get("accuracy") is not None:
        ax.plot([at["coverage"]], [at["accuracy"]], "*", color="#c44e52", markersize=12,
                label=f"model's threshold {at['threshold']:.2f}")
        ax.legend(loc="lower left", fontsize=8)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("coverage (share of images answered)")
    ax.set_ylabel("accuracy on answered images")
    ax.set_title("Risk-coverage: answering only above a confidence threshold", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_plots(metrics: dict[str, Any], out_dir: Path) -> None:
    """confusion_matrix.png, reliability.png and risk_coverage.png (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    _plot_confusion(metrics, out_dir / PLOTS[0])
    _plot_reliability(metrics, out_dir / PLOTS[1])
    _plot_risk_coverage(metrics, out_dir / PLOTS[2])


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
        f"macro F1 {_num(m['macro_f1'])}, top-3 {_pct(m['top3_accuracy'])}, "
        f"ECE {_num(m['ece'])}",
        f"report: {Path(out) / REPORT_MD}",
    ]
    return lines
