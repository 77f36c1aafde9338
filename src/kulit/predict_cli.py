"""`kulit predict`: a table for people, JSON lines for programs; bad files do not stop the rest."""

from __future__ import annotations

import json
import os
import sys
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from kulit import DISCLAIMER_EN, DISCLAIMER_ID
from kulit.config import TOP_K
from kulit.errors import ImageError, KulitError, ensure_writable_dir, printable
from kulit.serving.answer import Answer, answer_for
from kulit.serving.decode_sandbox import DecodePool
from kulit.serving.i18n import t
from kulit.serving.predict import Prediction, Predictor, heatmap_overlay

LANG = "en"  # the language of the table; --json carries both


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


def predict_files(predictor: Predictor, files: list[Path], *, top_k: int, heatmap: bool,
                  workers: int, batch_size: int) -> Iterator[Prediction | ImageError]:
    """Results in file order. With workers > 1 each worker takes a whole photo (decode,
    preprocess, one single-thread run): on 2 cores faster than batches of 32, in less memory
    (docs/results.md, Speed); at most 2 * workers photos are in flight, so memory stays
    bounded."""
    if workers <= 1:
        for i in range(0, len(files), batch_size):
            yield from predictor.predict_many(files[i: i + batch_size], top_k=top_k,
                                              heatmap=heatmap, batch_size=batch_size)
        return

    def one(f: Path) -> Prediction | ImageError:
        return predictor.predict_many([f], top_k=top_k, heatmap=heatmap, batch_size=1)[0]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[Prediction | ImageError]] = deque()
        for f in files:
            pending.append(pool.submit(one, f))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def run_predict(paths: list[Path], model: Path, *, json_out: bool = False, top_k: int = TOP_K,
                heatmap_dir: Path | None = None, batch_size: int = 32,
                workers: int | None = None, int8: bool = True) -> int:
    """Predict every file; exit status 0 if at least one image was predicted, else 1."""
    if batch_size < 1:
        raise KulitError(f"--batch-size must be at least 1, not {batch_size}")
    if top_k < 1:
        raise KulitError(f"--top-k must be at least 1, not {top_k}")
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    predictor = (Predictor(model, threads=1, max_concurrent=workers, int8=int8) if workers > 1
                 else Predictor(model, int8=int8))
    predictor.decoder = DecodePool(workers)  # each file is decoded in a worker, hard limits
    files = list(expand(paths))
    if not files:
        raise KulitError("no files to predict (empty folder?)")
    if heatmap_dir is not None:
        ensure_writable_dir(heatmap_dir, "--heatmap-dir")
    ok = 0
    if not json_out:
        print(t(LANG, "cli_model", model=predictor.model_id, n=len(predictor.classes),
                threshold=f"{predictor.card.threshold:.0%}"))
    results = predict_files(predictor, files, top_k=top_k, heatmap=heatmap_dir is not None,
                            workers=workers, batch_size=batch_size)
    bar = tqdm(total=len(files), unit="photo", file=sys.stderr, disable=not sys.stderr.isatty(),
               leave=False)
    for f, r in zip(files, results, strict=True):
        bar.update()
        if isinstance(r, ImageError):
            if json_out:
                print(json.dumps(_error_json(str(f), r)))
            else:
                bar.write(printable(t(LANG, "cli_error", file=f, message=r.message)),
                          file=sys.stderr)
            continue
        ok += 1
        ans = answer_for(r, predictor.card)
        if heatmap_dir is not None and r.heatmap is not None and r.image is not None:
            name = f"{f.stem}.heatmap.png"
            try:
                heatmap_overlay(r.image, r.heatmap).save(heatmap_dir / name)
            except OSError as e:  # disk full, folder removed meanwhile: say so, go on
                why = t(LANG, "cli_cannot_write", path=heatmap_dir / name, reason=e.strerror or e)
                bar.write(printable(t(LANG, "cli_error", file=f, message=why)), file=sys.stderr)
        print(json.dumps(_json(str(f), ans, predictor.model_id)) if json_out
              else printable(_line(f, ans)))
    bar.close()
    predictor.decoder.close()
    if not json_out:
        print(f"\n{t(LANG, 'cli_summary', ok=ok, total=len(files))} {DISCLAIMER_EN}")
    return 0 if ok else 1


def _json(source: str, ans: Answer, model_id: str) -> dict[str, object]:
    """One JSON line: the same answer fields as the web API (status, label, advice ...)."""
    return {"source": source, "model": model_id, **ans.to_dict(),
            "disclaimer": DISCLAIMER_EN, "disclaimer_id": DISCLAIMER_ID}


def _error_json(source: str, err: ImageError) -> dict[str, object]:
    """The JSON line of a photo that could not be read."""
    return {"source": source, "error": {"code": err.code, "message": err.message}}


# the table's note per urgency (kulit.serving.answer): what the page's box says, in brief
URGENCY_NOTE = {"urgent": "cli_urgent", "soon": "cli_soon"}  # text keys; none for the rest


def _line(f: Path, ans: Answer) -> str:
    tops = ", ".join(f"{c} {p:.0%}" for c, p in (ans.shortlist if ans.status == "shortlist"
                                                  else ans.top))
    head = {"answered": ans.label, "uncertain": t(LANG, "cli_uncertain"),
            "shortlist": t(LANG, "cli_shortlist")}.get(
        ans.status, ans.status.upper().replace("_", " "))
    if ans.status in ("not_skin", "retake"):
        return f"{f}: {head} ({ans.quality or t(LANG, 'cli_not_skin')}): " \
               f"{t(LANG, f'advice_{ans.advice}')}"
    note = f"  {t(LANG, URGENCY_NOTE[ans.urgency])}" if ans.urgency in URGENCY_NOTE else ""
    return f"{f}: {head} ({tops}){note}"
