"""Print docs/results.md markdown tables from benchmarks/results/{accuracy,trust,confound}.json.

    python benchmarks/render_tables.py [--results benchmarks/results] [--only accuracy]

Paste the output into docs/results.md after a full benchmark run, so the results page
shows the numbers the JSON files hold, with their 95% intervals.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
RUN_LABEL = {"skin8": "skin8 only", "skin8-web": "skin8-web only", "both": "both"}
TEST_LABEL = {"skin8": "skin8 test", "skin8-web": "skin8-web test", "both": "both tests"}
ACC_COLUMNS = (("balanced_accuracy", "balanced acc."), ("accuracy", "accuracy"),
               ("macro_f1", "macro F1"), ("top3_accuracy", "top-3"), ("ece", "ECE"))


def num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def with_ci(value: float | None, ci: list[float] | None, digits: int = 3) -> str:
    """0.677 (0.576–0.772): the point estimate and its 95% interval."""
    if value is None:
        return "n/a"
    if not ci:
        return num(value, digits)
    return f"{num(value, digits)} ({num(ci[0], digits)}–{num(ci[1], digits)})"


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def ratio(x: float | None) -> str:
    if x is None:
        return "inf"  # a class predicted that the test set does not hold
    return f"{x:.2f}x"


def cross_source_tables(res: dict[str, Any]) -> list[str]:
    """One row per (trained on, tested on): the headline numbers with their intervals."""
    head = ["trained on", "tested on", "n"] + [c for _, c in ACC_COLUMNS] + [
        "answered at threshold (right)", "max predicted / true share"]
    lines = ["| " + " | ".join(head) + " |",
             "|---|---|" + "---:|" * (len(head) - 2)]
    for run, entry in res["runs"].items():
        for test, m in entry["test"].items():
            ci = m.get("ci95") or {}
            cells = [RUN_LABEL.get(run, run), TEST_LABEL.get(test, test), str(m["n"])]
            cells += [with_ci(m[k], ci.get(k)) for k, _ in ACC_COLUMNS]
            cells.append(f"{pct(m['answered_share'])} ({pct(m['answered_accuracy'])})")
            cells.append(f"{ratio(m['max_share_ratio'])} {m['max_share_class'] or ''}".strip())
            lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {RUN_LABEL.get(r, r)}: {e['test'][t]['seen_left_out']} {TEST_LABEL[t]} photos "
             "left out (seen in its training)"
             for r, e in res["runs"].items() for t in e["test"]
             if e["test"][t].get("seen_left_out")]
    notes += [f"- {RUN_LABEL.get(r, r)}: {e['warning']}" for r, e in res["runs"].items()
              if e.get("warning")]
    if notes:
        lines += [""] + notes
    t = res.get("targets") or {}
    if t:
        lines += ["", "| target | met |", "|---|---|"]
        lines += [f"| {k} | {v if isinstance(v, bool) else num(v, 1)} |" for k, v in t.items()]
    return lines


def paper_tables(res: dict[str, Any]) -> list[str]:
    lines = ["| test split | paper recipe | kulit recipe |", "|---|---:|---:|"]
    for k, label in ACC_COLUMNS:
        cells = [with_ci(res[r].get(k), (res[r].get("ci95") or {}).get(k))
                 for r in ("paper", "kulit")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append(f"| gain in balanced accuracy | | "
                 f"{num(res.get('balanced_accuracy_gain_points'), 1)} points |")
    return lines


def rate_rows(prefix: str, node: Any) -> dict[str, dict[str, Any]]:
    """Flatten trust.json's {k, n, rate, ci95} leaves into {"path": leaf}."""
    if isinstance(node, dict) and {"k", "n", "rate"} <= set(node):
        return {prefix: node}
    out: dict[str, dict[str, Any]] = {}
    if isinstance(node, dict):
        for k, v in node.items():
            out |= rate_rows(f"{prefix}/{k}" if prefix else k, v)
    return out


def trust_tables(res: dict[str, Any]) -> list[str]:
    cols = [c for c in ("no_gate", "gate") if c in res]
    rows = {c: rate_rows("", res[c]) for c in cols}
    lines = ["| measure | " + " | ".join(c.replace("_", " ") for c in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for key in rows[cols[-1]]:
        cells = []
        for c in cols:
            r = rows[c].get(key)
            cells.append("" if r is None else
                         f"{r['k']}/{r['n']} = {with_ci(r['rate'], r.get('ci95'), 2)}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines


def confound_tables(res: list[dict[str, Any]]) -> list[str]:
    lines = ["| model | probe | n | same answer | accuracy | mean P(Chickenpox) |",
             "|---|---|---:|---:|---:|---:|"]
    for m in res:
        name = Path(m["model"]).name
        p = m.get("style_probe")
        if p:
            lines.append(f"| {name} | DermNet test, original | {p['n']} | | "
                         f"{num(p['accuracy_original'])} | "
                         f"{num(p['mean_p_chickenpox_original'])} |")
            for probe, r in p.items():
                if isinstance(r, dict):
                    lines.append(f"| {name} | {probe.replace('_', ' ')} | {p['n']} | "
                                 f"{with_ci(r['agreement'], r.get('agreement_ci95'))} | "
                                 f"{num(r['accuracy'])} | {num(r['mean_p_chickenpox'])} |")
        d = m.get("dermnet_logo_masked")
        if d:
            lines.append(f"| {name} | DermNet held-out, logo painted out | {d['n']} | "
                         f"{num(1 - d['top1_changed'])} | {num(d['accuracy_masked'])} | "
                         f"{num(d['mean_p_chickenpox_masked'])} |")
        c = m.get("chickenpox_as_dermnet")
        if c:
            lines.append(f"| {name} | Chickenpox in a DermNet frame (+ logo) | {c['n']} | | "
                         f"recall {num(c['recall_dermnet_frame_jpeg'])} "
                         f"({num(c['recall_frame_plus_logo'])}) | "
                         f"{num(c['mean_p_chickenpox_dermnet_frame_jpeg'])} "
                         f"({num(c['mean_p_chickenpox_frame_plus_logo'])}) |")
    return lines


def render(results: Path, only: str | None = None) -> str:
    out: list[str] = []
    for name, file in (("accuracy", "accuracy"), ("accuracy", "accuracy-paper"),
                       ("trust", "trust"), ("confound", "confound")):
        path = results / f"{file}.json"
        if (only and name != only) or not path.is_file():
            continue
        res = json.loads(path.read_text())
        if name == "accuracy":
            body = (cross_source_tables(res) if res.get("protocol", "") == "cross-source"
                    else paper_tables(res))
        elif name == "trust":
            body = trust_tables(res)
        else:
            body = confound_tables(res if isinstance(res, list) else [res])
        out += [f"<!-- python benchmarks/render_tables.py, from {path.name} -->",
                *body, ""]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--only", choices=("accuracy", "trust", "confound"))
    args = ap.parse_args()
    print(render(args.results, args.only))


if __name__ == "__main__":
    main()
