"""The shortlist section (card.json "shortlist", written by `kulit shortlist`) as text: the
per-source and per-band table in Markdown (report.md, README) and the command's summary."""

from __future__ import annotations

from typing import Any

ALL = "all"  # the group of every test photo, as shortlist_fit names it


def _pct(r: dict[str, Any]) -> str:
    if r.get("rate") is None:
        return "n/a"
    lo, hi = r["ci95"]
    return f"{r['rate']:.1%} ({lo:.0%}-{hi:.0%}, {r['k']}/{r['n']})"


def table_lines(section: dict[str, Any]) -> list[str]:
    """The per-source and per-band table in Markdown (README, report.md, closing notes)."""
    f = section["figures"]
    lines = [
        "| group | photos | coverage (target >= 90%) | mean list length (<= 2.2) | "
        "useful: 1-2 conditions (>= 70%) | melanoma urgent (>= 99%) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    mel = f["urgency"]["melanoma_urgent"]
    for kind, groups in (("source", f["per_source"]), ("skin type", f["per_band"])):
        for g, b in groups.items():
            name = "all test photos" if g == ALL else f"{kind} {g}"
            m = mel.get(g)
            lines.append(f"| {name} | {b['n']} | {_pct(b['coverage'])} | "
                         f"{'n/a' if b['mean_size'] is None else format(b['mean_size'], '.2f')} | "
                         f"{_pct(b['useful'])} | {_pct(m) if m else 'n/a'} |")
    u = f["urgency"]
    lines += ["", f"not-skin photos marked urgent: {_pct(u['not_skin_urgent'])}; people "
              f"photos: {_pct(u['people_urgent'])}; non-melanoma skin test photos: "
              f"{_pct(u['non_melanoma_urgent'][ALL])}; retake: never (by rule)"]
    return lines


def summary_lines(section: dict[str, Any]) -> list[str]:
    cut = ", ".join(f"{c} {v:.3f}" for c, v in section["cutoffs"].items())
    return [f"shortlist level {section['level']:.0%} ({section['method']}), cut-offs: {cut}",
            *table_lines(section)]
