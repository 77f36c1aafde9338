"""`kulit predict`: a table for people, JSON lines for programs; bad files do not stop the rest."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

from kulit import DISCLAIMER_EN, DISCLAIMER_ID
from kulit.answer import Answer, answer_for
from kulit.errors import ImageError, KulitError
from kulit.i18n import both
from kulit.predict import Predictor, heatmap_overlay


def expand(paths: list[Path]) -> Iterator[Path]:
    """Files as given; folders walked recursively in sorted order (hidden files skipped)."""
    for p in paths:
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts):
                    yield f
        else:
            yield p


def run_predict(paths: list[Path], model: Path, *, json_out: bool = False, top_k: int = 3,
                heatmap_dir: Path | None = None, batch_size: int = 32) -> int:
    """Predict every file; exit status 0 if at least one image was predicted, else 1."""
    predictor = Predictor(model)
    files = list(expand(paths))
    if not files:
        raise KulitError("no files to predict (empty folder?)")
    if heatmap_dir is not None:
        heatmap_dir.mkdir(parents=True, exist_ok=True)
    ok = 0
    if not json_out:
        print(f"model {predictor.model_id} ({len(predictor.classes)} conditions, "
              f"uncertain below {predictor.card.threshold:.0%})")
    for i in range(0, len(files), batch_size):
        chunk = files[i: i + batch_size]
        results = predictor.predict_many(chunk, top_k=top_k, heatmap=heatmap_dir is not None,
                                         batch_size=batch_size)
        for f, r in zip(chunk, results, strict=True):
            if isinstance(r, ImageError):
                if json_out:
                    print(json.dumps({"source": str(f), "error": {"code": r.code,
                                                                  "message": r.message}}))
                else:
                    print(f"{f}: error: {r.message}", file=sys.stderr)
                continue
            ok += 1
            ans = answer_for(r, predictor.card)
            if heatmap_dir is not None and r.heatmap is not None and r.image is not None:
                name = f"{f.stem}.heatmap.png"
                heatmap_overlay(r.image, r.heatmap).save(heatmap_dir / name)
            print(json.dumps(_json(str(f), ans, predictor.model_id)) if json_out
                  else _line(f, ans))
    if not json_out:
        print(f"\n{ok} of {len(files)} predicted. {DISCLAIMER_EN}")
    return 0 if ok else 1


def _json(source: str, ans: Answer, model_id: str) -> dict[str, object]:
    """One JSON line: the same answer fields as the web API (status, label, advice ...)."""
    return {"source": source, "model": model_id, **ans.to_dict(),
            "uncertain": ans.status == "uncertain",
            "advice": both(f"advice_{ans.advice}"),
            "disclaimer": DISCLAIMER_EN, "disclaimer_id": DISCLAIMER_ID}


def _line(f: Path, ans: Answer) -> str:
    tops = ", ".join(f"{c} {p:.0%}" for c, p in ans.top)
    head = {"answered": ans.label, "uncertain": "UNCERTAIN"}.get(
        ans.status, ans.status.upper().replace("_", " "))
    if ans.status in ("not_skin", "retake"):
        return f"{f}: {head} ({ans.quality or 'not a close-up of skin'}): " \
               f"{both(f'advice_{ans.advice}')['en']}"
    flag = "  -> see a doctor soon" if ans.see_doctor else ""
    return f"{f}: {head} ({tops}){flag}"
