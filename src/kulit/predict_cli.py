"""`kulit predict`: a table for people, JSON lines for programs; bad files do not stop the rest."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from kulit import DISCLAIMER_EN, DISCLAIMER_ID
from kulit.answer import Answer, answer_for
from kulit.errors import ImageError, KulitError, ensure_writable_dir
from kulit.i18n import both
from kulit.predict import Predictor, heatmap_overlay


def expand(paths: list[Path]) -> Iterator[Path]:
    """Files as given; folders walked recursively in sorted order (hidden files skipped).

    Whatever cannot be listed or read is still yielded: the decoder reports it on its own line.
    """
    for p in paths:
        if p.is_dir():
            try:
                found = sorted(p.rglob("*"))
            except OSError:  # an unreadable subfolder: fall back to what can be listed
                found = sorted(_walk(p))
            for f in found:
                if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts):
                    yield f
        else:
            yield p


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, _, names in os.walk(root):
        yield from (Path(dirpath) / n for n in names)


def run_predict(paths: list[Path], model: Path, *, json_out: bool = False, top_k: int = 3,
                heatmap_dir: Path | None = None, batch_size: int = 32) -> int:
    """Predict every file; exit status 0 if at least one image was predicted, else 1."""
    if batch_size < 1:
        raise KulitError(f"--batch-size must be at least 1, not {batch_size}")
    if top_k < 1:
        raise KulitError(f"--top-k must be at least 1, not {top_k}")
    predictor = Predictor(model)
    files = list(expand(paths))
    if not files:
        raise KulitError("no files to predict (empty folder?)")
    if heatmap_dir is not None:
        ensure_writable_dir(heatmap_dir, "--heatmap-dir")
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
                try:
                    heatmap_overlay(r.image, r.heatmap).save(heatmap_dir / name)
                except OSError as e:  # disk full, folder removed meanwhile: say so, go on
                    print(f"{f}: error: cannot write {heatmap_dir / name} "
                          f"({e.strerror or e})", file=sys.stderr)
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
