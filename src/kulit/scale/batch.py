"""`kulit predict --engine ray` and `kulit evaluate --engine ray`: Ray Data over an actor pool.

Each actor holds one torch-free `Predictor` (the served file, one ONNX Runtime thread), loaded
once from a copy of the model folder that travels through Ray's object store, so the workers
need kulit installed but not the model folder on their disks. Photos go through `map_batches`
one ONNX run each (as `kulit predict --workers N` does: the same numbers as the local path);
the driver receives the JSON lines of `kulit predict --json`, prints them in input order or
writes them as Parquet parts (see `kulit.scale.output`). A photo that cannot be read is a row
with its error; Ray re-runs the batches of an actor that dies, and the driver sees each row once.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import sys
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kulit import DISCLAIMER_EN
from kulit.errors import ImageError, KulitError, ensure_writable_dir
from kulit.progress import progress_bar
from kulit.scale import import_ray
from kulit.scale.cluster import connect, materialize, model_files
from kulit.scale.sources import is_uri, list_sources, read_source

ROWS_PER_BLOCK = 1000  # the most photos in one input block (a unit of retry)
PROGRESS_EVERY = 1000  # without a terminal: one progress line per this many photos


@dataclass(frozen=True)
class RayOptions:
    """How the run uses the cluster."""

    address: str | None = None  # a running cluster ("auto", "ray://host:10001"); None: local
    actors: int | None = None  # predictors in the pool; None: one per CPU of the cluster
    batch_size: int = 8  # photos per map_batches call


@dataclass
class Row:
    """One photo's result as the driver receives it."""

    source: str
    line: str  # the JSON line of `kulit predict --json`
    ok: bool  # False for a photo that could not be read (the line holds its error)
    result: bytes | None  # the pickled Prediction or ImageError, when asked for (evaluate)


class PredictActor:
    """One Predictor per actor, loaded once from the shipped model folder."""

    def __init__(self, files_ref: list[Any], top_k: int, int8: bool, results: bool) -> None:
        import ray

        from kulit.serving.decode_sandbox import DecodePool
        from kulit.serving.predict import Predictor

        folder = materialize(ray.get(files_ref[0]))
        try:
            self.predictor = Predictor(folder, threads=1, max_concurrent=1, int8=int8)
        finally:  # the session holds the model now; nothing is left behind if the actor dies
            shutil.rmtree(folder, ignore_errors=True)
        # decoded in a sandboxed worker with hard limits, as `kulit predict` does: a hostile
        # file becomes its error row instead of taking the actor down (and its retries too)
        self.predictor.decoder = DecodePool(1)
        self.top_k, self.results = top_k, results

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        from kulit.predict_cli import _error_json, _json
        from kulit.serving.answer import answer_for

        sources: list[str] = []
        lines: list[str] = []
        oks: list[bool] = []
        results: list[bytes | None] = []
        for s, where in zip(batch.column("source").to_pylist(),
                            batch.column("where").to_pylist(), strict=True):
            r = self._predict(s, where)
            sources.append(s)
            oks.append(not isinstance(r, ImageError))
            if isinstance(r, ImageError):
                lines.append(json.dumps(_error_json(s, r)))
            else:
                ans = answer_for(r, self.predictor.card)
                lines.append(json.dumps(_json(s, ans, self.predictor.model_id)))
                r.image = None  # the crop stays here; the rest is a few hundred bytes
            results.append(pickle.dumps(r) if self.results else None)
        return pa.table({"source": pa.array(sources, pa.string()),
                         "line": pa.array(lines, pa.string()), "ok": pa.array(oks, pa.bool_()),
                         "result": pa.array(results, pa.binary())})

    def _predict(self, source: str, where: str) -> Any:
        try:
            data = read_source(where)
            return _named(self.predictor.predict_many([data], top_k=self.top_k,
                                                      batch_size=1)[0], source, where)
        except ImageError as e:
            return _named(e, source, where)
        except Exception as e:  # noqa: BLE001 - one photo must never stop the run
            return ImageError(f"{source}: {type(e).__name__}: {e}"[:300], "unreadable")

    def __repr__(self) -> str:  # what Ray's logs and progress show
        return "PredictActor"


def _named(r: Any, source: str, where: str) -> Any:
    """An error names the photo as it was given (not its absolute path, nor "upload" for
    a URI's bytes), as `kulit predict` does."""
    if isinstance(r, ImageError):
        for name in (where, "upload"):
            if r.message.startswith(name + ":"):
                return ImageError(source + r.message[len(name):], r.code)
    return r


def predict_rows(sources: list[str], model_dir: Path, *, top_k: int = 3, int8: bool = True,
                 opts: RayOptions | None = None, results: bool = False
                 ) -> Generator[Row, None, None]:
    """Every source's row, in the order given, computed on the connected Ray cluster;
    `results` adds each pickled Prediction / ImageError (Ray's own workers: trusted)."""
    import pyarrow as pa

    import_ray()  # a clear message if ray is missing
    import ray
    import ray.data

    opts = opts or RayOptions()
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # JSON lines come out in input order
    ctx.enable_progress_bars = False  # the driver shows one progress display, its own
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-run INFO lines
    actors = opts.actors
    if not actors:
        cpus = ray.cluster_resources().get("CPU", 1)  # type: ignore[no-untyped-call, unused-ignore]
        actors = max(1, int(cpus))
    files_ref = ray.put(model_files(model_dir))
    # at least 4 blocks per actor keeps every actor busy to the end; a block is a unit of retry
    per_block = max(1, min(ROWS_PER_BLOCK, len(sources) // (4 * actors)))
    # `where` is what an actor opens: local paths made absolute (workers have their own cwd)
    where = [s if is_uri(s) else os.path.abspath(s) for s in sources]
    blocks = [pa.table({"source": pa.array(sources[i: i + per_block], pa.string()),
                        "where": pa.array(where[i: i + per_block], pa.string())})
              for i in range(0, len(sources), per_block)]
    ds = ray.data.from_arrow(blocks).map_batches(
        PredictActor, fn_constructor_args=([files_ref], top_k, int8, results),
        batch_size=min(opts.batch_size, per_block), batch_format="pyarrow", num_cpus=1,
        compute=ray.data.ActorPoolStrategy(size=actors))
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        cols: dict[str, list[Any]] = batch.to_pydict()  # type: ignore[union-attr]
        for s, line, ok, r in zip(cols["source"], cols["line"], cols["ok"], cols["result"],
                                  strict=True):
            yield Row(s, line, ok, r)


class Progress:
    """Answered photos on the one progress display (kulit.progress): a bar on a terminal,
    otherwise one line per PROGRESS_EVERY photos (logs)."""

    def __init__(self, total: int) -> None:
        self.total, self.n = total, 0
        self.show = progress_bar("predicting", "photo", log_every=PROGRESS_EVERY)

    def update(self) -> None:
        self.n += 1
        if self.show is not None:
            self.show(self.n, self.total)

    def close(self) -> None:
        if self.show is not None:
            self.show.close()


def run_ray_predict(paths: list[Path], model: Path, *, top_k: int = 3, int8: bool = True,
                    out: Path | None = None, opts: RayOptions | None = None) -> int:
    """`kulit predict --engine ray`: JSON lines on stdout, or Parquet parts in `out` (resumed
    where a previous run stopped). Exit 0 if any photo has an answer."""
    import_ray()  # before any work: a plain install says which extra to add
    from kulit.scale.output import PartWriter, done_sources
    from kulit.serving.predict import Predictor

    if top_k < 1:
        raise KulitError(f"--top-k must be at least 1, not {top_k}")
    opts = opts or RayOptions()
    if opts.batch_size < 1:
        raise KulitError(f"--batch-size must be at least 1, not {opts.batch_size}")
    model_id = Predictor(model, threads=1, int8=int8).model_id  # a bad model fails here
    sources = list_sources(paths)
    done: set[str] = set()
    if out is not None:
        ensure_writable_dir(out, "--out")
        done = done_sources(out, model_id)
        todo = [s for s in sources if s not in done]
        print(f"{len(sources) - len(todo)} of {len(sources)} photos already in {out}; "
              f"predicting {len(todo)}", file=sys.stderr)
    else:
        todo = sources
    if not todo:
        return 0
    started = connect(opts.address)
    writer = PartWriter(out) if out is not None else None
    progress = Progress(len(todo))
    ok = 0
    rows = predict_rows(todo, model, top_k=top_k, int8=int8, opts=opts)
    try:
        for row in rows:
            ok += row.ok
            if writer is not None:
                writer.add(row.line)
            else:
                print(row.line, flush=False)
            progress.update()
    finally:
        rows.close()  # stops the dataset's actors now, also on Ctrl+C
        progress.close()
        if writer is not None:
            writer.flush()  # what has been answered stays answered, also on Ctrl+C
        if started:
            import_ray().shutdown()
    print(f"{ok} of {len(todo)} predicted"
          + (f"; {out} holds {len(done) + len(todo)} rows" if out is not None else "")
          + f". {DISCLAIMER_EN}", file=sys.stderr)
    return 0 if ok or done else 1


def ray_predict_fn(model: Path, opts: RayOptions | None = None
                   ) -> Callable[[list[Path]], Iterator[Any]]:
    """For `kulit evaluate --engine ray`: photos -> Prediction or ImageError each, in order,
    the same objects the local Predictor gives (without the crop)."""

    def predict_all(paths: list[Path]) -> Iterator[Any]:
        started = connect((opts or RayOptions()).address)
        rows = predict_rows([str(p) for p in paths], model, opts=opts, results=True)
        try:
            for row in rows:
                yield pickle.loads(row.result or b"")
        finally:
            rows.close()
            if started:
                import_ray().shutdown()

    return predict_all
