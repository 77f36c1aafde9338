"""`kulit build`: data, train, export, quantize, gate, shortlist, evaluate, export-web.

Each step is skipped when the hashes of its inputs are those of its last run and its output is
still there. What a step's output is voided by lives in `kulit.serving.model_dir.DEPENDS_ON`
(a new model.onnx removes the int8 file, gate, ...), so a step whose input changed finds its old
output gone and runs again. The hashes are kept in a small JSON file (BuildConfig.state).
Torch is imported only by the train and export steps, when they run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kulit.config import BUILD_STEPS, BuildConfig, QuantizeConfig, TrainConfig, make_config
from kulit.errors import KulitError
from kulit.serving.model_dir import (
    GATE,
    GATE_FILE,
    HEAD_FILE,
    INT8,
    METRICS,
    MODEL,
    SHORTLIST,
    WEB,
    ModelDir,
    file_sha256,
)

SPLIT_CSV = "split.csv"
CHECKPOINT = "checkpoint.pt"


class BuildError(KulitError):
    """A build step could not run (or its input is missing)."""


@dataclass
class Build:
    """One build's settings and the folders it reads and writes."""

    cfg: BuildConfig
    log: Callable[[str], None] = print

    @property
    def root(self) -> Path:
        return Path(self.cfg.data_root)

    @property
    def split(self) -> Path:
        return Path(self.cfg.data_out) / SPLIT_CSV

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.run_dir)

    @property
    def md(self) -> ModelDir:
        return ModelDir(self.cfg.model)

    def train_config(self) -> TrainConfig:
        return make_config(str(self.root), str(self.split), self.cfg.recipe,
                           out=str(self.run_dir), **dict(self.cfg.train_options))


# ---------------------------------------------------------------- hashes of inputs


def tree_hash(folder: Path) -> str:
    """Every file under `folder` by relative path, size and modification time (not content:
    re-reading thousands of photos on every build would cost more than a step)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            st = p.stat()
            h.update(f"{p.relative_to(folder)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _sha(path: Path) -> str | None:
    return file_sha256(path) if Path(path).is_file() else None


def _need(path: Path, step: str, made_by: str) -> str:
    if not Path(path).is_file():
        raise BuildError(f"{step} needs {path}; run the build from {made_by}")
    return file_sha256(path)


def _served(b: Build, step: str) -> dict[str, Any]:
    """The served file and the values fitted for it (what gate and later steps read)."""
    card = b.md.card() if b.md.file("card.json").is_file() else None
    if card is None:
        raise BuildError(f"{step} needs {b.md.path}/card.json; run the build from export")
    precision, path, temperature = b.md.served(card)
    return {"precision": precision, "file": _need(path, step, "export"),
            "temperature": temperature, "threshold": card.threshold, "gate": card.gate,
            "gate_file": _sha(b.md.file(GATE_FILE))}


def data_inputs(b: Build) -> dict[str, Any]:
    exclude = Path(b.cfg.exclude) if b.cfg.exclude else None
    return {"sources": {s: tree_hash(b.root / s) for s in b.cfg.sources},
            "exclude": _sha(exclude) if exclude else None,
            "split": [b.cfg.seed, b.cfg.val_frac, b.cfg.test_frac]}


def train_inputs(b: Build) -> dict[str, Any]:
    return {"split": _need(b.split, "train", "data"),
            "photos": {s: tree_hash(b.root / s) for s in b.cfg.sources},
            "config": dataclasses.asdict(b.train_config())}


def export_inputs(b: Build) -> dict[str, Any]:
    extra = Path(b.cfg.card_extra) if b.cfg.card_extra else None
    return {"checkpoint": _need(b.run_dir / CHECKPOINT, "export", "train"),
            "card_extra": _sha(extra) if extra else None}


def quantize_inputs(b: Build) -> dict[str, Any]:
    return {"model": _need(b.md.file("model.onnx"), "quantize", "export"),
            "split": _need(b.split, "quantize", "data"),
            "config": dataclasses.asdict(QuantizeConfig())}


def gate_inputs(b: Build) -> dict[str, Any]:
    served = _served(b, "gate")
    return {"file": served["file"], "split": _need(b.split, "gate", "data"),
            "data": tree_hash(b.root)}


def shortlist_inputs(b: Build) -> dict[str, Any]:
    return {**_served(b, "shortlist"), "split": _need(b.split, "shortlist", "data"),
            "data": tree_hash(b.root)}


def evaluate_inputs(b: Build) -> dict[str, Any]:
    return {**_served(b, "evaluate"), "shortlist": b.md.read_section(SHORTLIST),
            "split": _need(b.split, "evaluate", "data"), "data": tree_hash(b.root)}


def web_inputs(b: Build) -> dict[str, Any]:
    card = b.md.card()
    return {**_served(b, "export-web"), "head": _sha(b.md.file(HEAD_FILE)),
            "card": {k: v for k, v in card.to_dict().items() if k not in ("metrics", "data")}}


# ---------------------------------------------------------------- the steps


def run_data_step(b: Build) -> str:
    from kulit.dataprep.split import run_data

    exclude = Path(b.cfg.exclude) if b.cfg.exclude and Path(b.cfg.exclude).is_file() else None
    code = run_data([b.root / s for s in b.cfg.sources], Path(b.cfg.data_out), seed=b.cfg.seed,
                    val_frac=b.cfg.val_frac, test_frac=b.cfg.test_frac, exclude=exclude)
    if code != 0:
        raise BuildError(f"kulit data stopped (exit {code}); see its report above")
    return str(b.split)


def run_train_step(b: Build) -> str:
    from kulit.training.train import train

    run = train(b.train_config(), log=b.log)
    if json.loads((run / "summary.json").read_text()).get("interrupted"):
        raise BuildError(f"training was interrupted: the best epoch so far is in {run}")
    return str(run)


def run_export_step(b: Build) -> str:
    from kulit.training.export import export, load_extra

    extra = Path(b.cfg.card_extra) if b.cfg.card_extra else None
    export(b.run_dir, b.md.path, extra=load_extra(extra if extra and extra.is_file() else None))
    return str(b.md.file("model.onnx"))


def run_quantize_step(b: Build) -> str:
    from kulit.build.quantize import QuantizeError, quantize_model, summary_lines

    try:
        entry = quantize_model(b.md.path, b.split)
    except QuantizeError as e:  # not fatal: model.onnx is served
        for line in summary_lines(e.entry, b.md.path):
            b.log(line)
        return REFUSED + f": {e.message}"
    for line in summary_lines(entry, b.md.path):
        b.log(line)
    return str(b.md.file(entry["file"]))


def run_gate_step(b: Build) -> str:
    from kulit.build.gate_fit import run_gate

    for line in run_gate(b.md.path, b.root, split_csv=b.split):
        b.log(line)
    return f"threshold {b.md.card().threshold:.4f}"


def shortlist_runner() -> Callable[..., list[str]] | None:
    """The shortlist fit (`kulit shortlist`), when this install has it."""
    try:
        from kulit.build.shortlist_fit import run_shortlist
    except ImportError:
        return None
    return run_shortlist


def run_shortlist_step(b: Build) -> str:
    fit = shortlist_runner()
    if fit is None:
        return "not available in this install"
    for line in fit(b.md.path, b.root, b.split):
        b.log(line)
    return "card section shortlist"


def run_evaluate_step(b: Build) -> str:
    from kulit.build.evaluate import evaluate_model

    m = evaluate_model(b.md.path, b.root, split="test", split_csv=b.split, out=b.md.path)
    return f"test balanced accuracy {m['balanced_accuracy']:.3f} (n={m['n']})"


def run_web_step(b: Build) -> str:
    from kulit.build.webmodel import build_web_model

    return str(build_web_model(b.md.path))


REFUSED = "int8 refused"


@dataclass(frozen=True)
class Step:
    name: str
    inputs: Callable[[Build], dict[str, Any]]
    run: Callable[[Build], str]
    done: Callable[[Build], bool]  # its output is there


STEPS = (
    Step("data", data_inputs, run_data_step, lambda b: b.split.is_file()),
    Step("train", train_inputs, run_train_step, lambda b: (b.run_dir / CHECKPOINT).is_file()),
    Step("export", export_inputs, run_export_step, lambda b: b.md.present(MODEL)),
    Step("quantize", quantize_inputs, run_quantize_step, lambda b: b.md.present(INT8)),
    Step("gate", gate_inputs, run_gate_step, lambda b: b.md.present(GATE)),
    Step("shortlist", shortlist_inputs, run_shortlist_step,
         lambda b: shortlist_runner() is None or b.md.present(SHORTLIST)),
    Step("evaluate", evaluate_inputs, run_evaluate_step, lambda b: b.md.present(METRICS)),
    Step("export-web", web_inputs, run_web_step, lambda b: b.md.present(WEB)),
)
STEP_NAMES = tuple(s.name for s in STEPS)
assert STEP_NAMES == BUILD_STEPS, "kulit.config.BUILD_STEPS names these steps in this order"


def _digest(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def _load_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


@dataclass
class Outcome:
    step: str
    status: str  # "ran", "skipped", "not run"
    seconds: float = 0.0
    note: str = ""


def run_build(cfg: BuildConfig, start: str | None = None, until: str | None = None,
              force: bool = False, log: Callable[[str], None] = print) -> list[Outcome]:
    """Run the steps from `start` to `until` (inclusive); `start` itself always runs, the rest
    only when their inputs changed or their output is missing (`force`: every step runs)."""
    for name in (start, until):
        if name is not None and name not in STEP_NAMES:
            raise BuildError(f"unknown step {name!r}; one of {', '.join(STEP_NAMES)}")
    first = STEP_NAMES.index(start) if start else 0
    last = STEP_NAMES.index(until) if until else len(STEPS) - 1
    if first > last:
        raise BuildError(f"--from {start} comes after --until {until}")
    b = Build(cfg, log)
    state_path = Path(cfg.state)
    state = _load_state(state_path)
    outcomes = []
    for i, step in enumerate(STEPS):
        if not first <= i <= last:
            outcomes.append(Outcome(step.name, "not run"))
            continue
        log(f"[{i - first + 1}/{last - first + 1}] {step.name}")
        digest = _digest(step.inputs(b))
        last_run = state.get(step.name, {})
        unchanged = last_run.get("inputs") == digest
        kept = step.done(b) or (step.name == "quantize" and last_run.get("note", "")
                                .startswith(REFUSED))
        forced = force or (start is not None and i == first)
        if unchanged and kept and not forced:
            outcomes.append(Outcome(step.name, "skipped", note="inputs unchanged"))
            log(f"    skipped: inputs unchanged since {last_run.get('at', '?')}")
            continue
        t0 = time.perf_counter()
        note = step.run(b)
        seconds = time.perf_counter() - t0
        # the inputs as the step saw them: a step's own writes (the gate's threshold) are output
        state[step.name] = {"inputs": digest, "note": note, "seconds": round(seconds, 1),
                            "at": time.strftime("%Y-%m-%d %H:%M:%S")}
        state_path.parent.mkdir(parents=True, exist_ok=True)
        state_path.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        outcomes.append(Outcome(step.name, "ran", seconds, note))
        log(f"    done in {seconds:.0f} s: {note}")
    return outcomes


def summary_lines(outcomes: list[Outcome]) -> list[str]:
    """One line per step: what happened, how long, what it made."""
    width = max(len(o.step) for o in outcomes)
    lines = ["build summary:"]
    for o in outcomes:
        took = f"{o.seconds:6.0f} s" if o.status == "ran" else " " * 8
        lines.append(f"  {o.step:<{width}}  {o.status:<8} {took}  {o.note}".rstrip())
    return lines
