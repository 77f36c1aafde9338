"""`kulit explain` as plain text: the paper's worked example and a photo's walkthrough as
tables side by side, the paper's wrong figures marked. Computing lives in kulit.explain.steps."""

from __future__ import annotations

from typing import Any

import numpy as np

from kulit.explain.steps import CHANNELS

MARK = "✗"


def _fmt_num(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v)
    if v != 0 and abs(v) < 1e-4:
        return f"{v:.3e}"
    s = f"{v:.6f}"
    return s.rstrip("0").rstrip(".") if float(s) == v else s  # 0.3 stays short, 1 - 2e-8 not


def _marks_for(step: str, discrepancies: list[dict[str, Any]]) -> dict[tuple[int, ...], Any]:
    return {tuple(d["position"]): d["paper"] for d in discrepancies
            if d["step"] == step and d["position"] is not None}


def format_matrix(rows: list[list[Any]], marks: dict[tuple[int, ...], Any] | None = None
                  ) -> list[str]:
    """Numbers right-aligned per column; a flagged cell reads "-20  (paper: -22 ✗)"."""
    marks = marks or {}
    nums = [[_fmt_num(v) for v in row] for row in rows]
    cells = []
    for c in range(len(nums[0])):
        numw = max(len(row[c]) for row in nums)
        col = [nums[r][c].rjust(numw)
               + (f"  (paper: {_fmt_num(marks[(r, c)])} {MARK})" if (r, c) in marks else "")
               for r in range(len(nums))]
        w = max(len(x) for x in col)
        cells.append([x.ljust(w) for x in col])
    return ["  ".join(col[r] for col in cells).rstrip() for r in range(len(nums))]


def _side_by_side(blocks: list[tuple[str, list[str]]], gap: str = "    ") -> list[str]:
    width = [max(len(title), *(len(line) for line in lines)) for title, lines in blocks]
    out = [gap.join(t.upper().ljust(w) for (t, _), w in zip(blocks, width, strict=True)).rstrip()]
    for i in range(max(len(lines) for _, lines in blocks)):
        out.append(gap.join((lines[i] if i < len(lines) else "").ljust(w)
                            for (_, lines), w in zip(blocks, width, strict=True)).rstrip())
    return out


def _format_conv_part(d: dict[str, Any], discrepancies: list[dict[str, Any]]) -> list[str]:
    steps, inputs = d["steps"], d["inputs"]
    lines = ["1. Patch, 4x4 pixels per channel (rows top to bottom)"]
    lines += ["   " + s for s in _side_by_side(
        [(c, format_matrix(inputs["patch"][c])) for c in CHANNELS])]
    lines += ["", f"2. Kernel 3x3, stride {inputs['stride']}, no padding "
                  "(cross-correlation, as CNN layers compute it)"]
    lines += ["   " + s for s in format_matrix(inputs["kernel"])]
    lines += ["", "3. Convolution per channel: sum of patch window x kernel"]
    lines += ["   " + s for s in _side_by_side(
        [(c, format_matrix(steps["conv"][c], _marks_for(f"conv.{c}", discrepancies)))
         for c in CHANNELS])]
    lines += ["", "4. Sum of the three channels"]
    lines += ["   " + s for s in format_matrix(steps["sum"], _marks_for("sum", discrepancies))]
    lines += ["", "5. ReLU: max(0, x)"]
    lines += ["   " + s for s in format_matrix(steps["relu"], _marks_for("relu", discrepancies))]
    flat_marks: dict[tuple[int, ...], Any] = {
        (0, i): p for (i,), p in _marks_for("flatten", discrepancies).items()}
    lines += ["", "6. Flatten, row by row"]
    lines += ["   " + s for s in format_matrix([steps["flatten"]], flat_marks)]
    return lines


def format_paper_walkthrough(d: dict[str, Any]) -> str:
    """Render `paper_walkthrough()` as plain-text tables, with the paper's wrong figures flagged."""
    disc = d["discrepancies"]
    lines = [f"The worked example of \"{d['title']}\", recomputed.",
             f"A figure marked {MARK} is what the paper prints where it does not follow "
             "from its inputs.", ""]
    lines += _format_conv_part(d, disc)
    dense, probs = d["steps"]["dense"], d["steps"]["softmax"]
    lines += ["", "7. Dense layers: O = W·x + b, x the flattened vector",
              "   The paper does not give W and b, so O1 and O2 are taken as printed "
              "(not checked)."]
    lines += ["   " + s for s in format_matrix([[f"O{i + 1}", o]
                                                for i, o in enumerate(dense["outputs"])])]
    marks: dict[tuple[int, ...], Any] = {
        (i, 1): p for (i,), p in _marks_for("softmax", disc).items()}
    lines += ["", "8. Softmax: p_i = exp(O_i) / sum_j exp(O_j)"]
    lines += ["   " + s for s in format_matrix([[f"p{i + 1}", p] for i, p in enumerate(probs)],
                                               marks)]
    chk = d["softmax_check"]
    paper_p = d["paper"]["softmax"]
    lines += [f"   The paper's {paper_p[0]} / {paper_p[1]} would need O2 - O1 = "
              f"ln({paper_p[1]}/{paper_p[0]}) = {chk['logit_gap_for_paper_softmax']:.3f};",
              f"   its O2 - O1 is {chk['logit_gap_given']:.3f}."]
    lines += ["", f"Paper figures that do not follow from its inputs: {len(disc)}"]
    for x in disc:
        note = f"  ({x['note']})" if x.get("note") else ""
        lines.append(f"   {x['step']} {_where(x['step'], x['position'])}: paper "
                     f"{_fmt_num(x['paper'])}, correct {_fmt_num(x['correct'])}{note}")
    checked = [f"conv.{c}" for c in CHANNELS] + ["sum", "relu", "flatten", "softmax"]
    right = [s for s in checked if not any(x["step"] == s for x in disc)]
    if right:
        lines.append(f"All printed figures of {', '.join(right)} follow from the inputs.")
    return "\n".join(lines)


def _where(step: str, position: list[int] | None) -> str:
    """A 1-based, human reading of a 0-based position."""
    if position is None:
        return "(shape differs)"
    if len(position) == 2:
        return f"row {position[0] + 1}, column {position[1] + 1}"
    return f"p{position[0] + 1}" if step == "softmax" else f"item {position[0] + 1}"


def format_image_steps(d: dict[str, Any]) -> str:
    """Render `explain_image()` as plain-text tables: the patch steps, then the model's."""
    img = d["image"]
    x, y = d["at"]
    where = "the square crop the model saw" if img.get("crop") else "upright, RGB"
    lines = [f"{img['path'] or 'image'} ({img['width']}x{img['height']}), 4x4 patch with "
             f"top-left pixel x={x}, y={y} ({where})", ""]
    lines += _format_conv_part(d, [])
    if d.get("model"):
        lines += ["", *format_model_part(d["model"])]
    elif d.get("model_note"):
        lines += ["", d["model_note"]]
    return "\n".join(lines)


def _fmt_fixed(v: float, decimals: int) -> str:
    return f"{v:.{decimals}f}"


def _fmt_exp(v: float) -> str:
    return f"{v:.6g}" if 1e-4 <= abs(v) < 1e7 or v == 0 else f"{v:.4e}"


def format_first_layer(m: dict[str, Any]) -> list[str]:
    """Step 7: the model's first convolution layer, one row of statistics per filter."""
    fl = m["first_layer"]
    size = m["input_size"]
    lines = [f"7. The real model's first convolution layer ({m['backbone']}): "
             f"{fl['filters']} filters,",
             f"   each gives a {fl['height']}x{fl['width']} map of the {size}x{size} crop "
             f"(stride {_fmt_num(fl['stride'])}). Like steps 2-5, with learned kernels,",
             "   then the layer's normalisation and activation.",
             f"   Note: {fl['note']}."]
    rows = [["FILTER", "MEAN", "MIN", "MAX"]]
    st = fl["stats"]
    rows += [[str(i + 1), _fmt_fixed(a, 4), _fmt_fixed(b, 4), _fmt_fixed(c, 4)]
             for i, (a, b, c) in enumerate(zip(st["mean"], st["min"], st["max"], strict=True))]
    lines += ["   " + s for s in format_matrix(rows)]
    return lines


def format_softmax(m: dict[str, Any]) -> list[str]:
    """Steps 8-10: logits -> divide by T -> exp -> sum -> probabilities, then the answer."""
    sm = m["softmax"]
    t = sm["temperature"]
    shift = sm["shift"]
    e_head = "EXP(Z/T)" if not shift else f"EXP(Z/T - {_fmt_num(shift)})"
    lines = [f"8. The model's final logits z, one per condition, divided by the temperature "
             f"T = {_fmt_num(t)}.",
             "   T comes from the model card, fitted on validation photos so the "
             "probabilities are honest",
             "   (T = 1 would leave the logits as they are).",
             "", "9. Softmax: p_i = exp(z_i / T) / sum_j exp(z_j / T)"]
    width = max(len("CONDITION"), *(len(c) for c in m["classes"]))
    rows = [["CONDITION".ljust(width), "Z", "Z / T", e_head, "P"]]
    for c, z, s, e, p in zip(m["classes"], sm["logits"], sm["scaled"], sm["exp"], sm["probs"],
                             strict=True):
        rows.append([c.ljust(width), _fmt_fixed(z, 4), _fmt_fixed(s, 4), _fmt_exp(e),
                     _fmt_fixed(p, 6)])
    rows.append(["sum".ljust(width), "", "", _fmt_exp(sm["sum"]), _fmt_fixed(sum(sm["probs"]), 6)])
    lines += ["   " + s for s in format_matrix(rows)]
    if shift:
        lines.append(f"   (every z / T was first lowered by its largest value {_fmt_num(shift)}"
                     "; the probabilities are the same and exp cannot overflow)")
    top = ", ".join(f"{t_['label']} {t_['probability']:.1%}" for t_ in m["top"])
    lines += ["", f"10. Top {len(m['top'])}: {top}"]
    listed = ", ".join(f"{x['class']} {x['probability']:.1%}" for x in m.get("shortlist", []))
    level = m.get("shortlist_level")
    on = f"on the {level:.0%} shortlist" if level else "named"
    if m["status"] not in ("answered", "shortlist", "uncertain"):
        lines.append(f"    {m['status'].upper().replace('_', ' ')}: {m['advice']['en']}")
    elif m["status"] == "uncertain" and listed:
        lines.append(f"    UNCERTAIN: {len(m['shortlist'])} conditions {on} ({listed}); "
                     "kulit cannot narrow it down")
    elif m["status"] == "uncertain":
        lines.append(f"    UNCERTAIN: the top probability {m['confidence']:.1%} is below the "
                     f"model's threshold {m['threshold']:.0%}")
    elif m["status"] == "shortlist":
        lines.append(f"    One of these, {on}: {listed}")
    else:
        lines.append(f"    Answer: {m['label']} (top probability {m['confidence']:.1%}, "
                     f"threshold {m['threshold']:.0%})")
    note = {"urgent": "    -> URGENT: see a doctor within two weeks (a puskesmas can refer)",
            "soon": "    -> see a doctor within a few days"}.get(m.get("urgency", ""))
    if note:
        lines.append(note)
    elif m["see_doctor"]:
        lines.append("    -> ask a doctor if it worries you")
    chk = m["check"]
    lines.append(f"    Check: the same probabilities as {chk['against']}, "
                 f"largest difference {chk['max_abs_diff']:.1e}.")
    return lines


def format_model_part(m: dict[str, Any]) -> list[str]:
    """The real model's part of `explain_image()` as text lines."""
    size = m["input_size"]
    lines = [f"Model {m['name']} on this photo. Steps 1-6 used the paper's illustrative kernel "
             "on one patch;",
             f"the real model works on the whole photo, resized and centre-cropped to "
             f"{size}x{size}.", ""]
    lines += format_first_layer(m)
    lines += [""] + format_softmax(m)
    return lines


def format_explanation(d: dict[str, Any]) -> str:
    """Render either result of this module as text."""
    return format_paper_walkthrough(d) if d["source"] == "paper" else format_image_steps(d)
