"""ModelDir: the one owner of a model folder's files, and of what each file is made from.

A model folder holds one artefact per build step:

    model      model.onnx + head.npz + card.json        `kulit export`
    int8       model-int8.onnx + card section "int8"   `kulit quantize`
    gate       gate.npz + card section "gate", and the served temperature and threshold
                                                       `kulit gate`
    shortlist  card section "shortlist" (conformal cut-offs)
    metrics    metrics.json, report.md, predictions.csv, plots + card section "metrics"
                                                       `kulit evaluate --out <model folder>`
    web        model-web.onnx (+ .gz)                  `kulit export-web`

DEPENDS_ON is the one table of what each artefact is made from. Writing an artefact through
ModelDir voids (deletes, or clears in the card) everything made from it, directly or not: a new
model.onnx voids all the rest; a new int8 file voids the gate, the shortlist, the metrics and
the browser model, because each of those is fitted on or measured with the served file.

Temperature and threshold have one owner, the gate step (`ModelDir.write_gate`): both are
fitted on the validation photos of every skin source with the file that is served, and written
once, where `served` reads them (the int8 entry for the int8 file, the card's top level for
model.onnx). Until a gate is fitted, the card holds the values `kulit train` fitted for the run
(export copies them), and an int8 file is served with that temperature; `kulit quantize` keeps
its own fit only in its check figures. Voiding the gate puts the run's threshold back.

Torch-free: serving reads the folder through here too.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kulit.errors import ModelError
from kulit.serving.card import CARD_FILE, ModelCard, load_card, save_card

ONNX_FILE = "model.onnx"
INT8_FILE = "model-int8.onnx"  # written by `kulit quantize` only if it passes its check
HEAD_FILE = "head.npz"  # head weights for the torch-free Grad-CAM
GATE_FILE = "gate.npz"  # the trust gate's scorers (kulit.serving.gate)
WEB_ONNX_FILE = "model-web.onnx"  # the browser model (kulit.build.webmodel)
WEB_ONNX_GZ = WEB_ONNX_FILE + ".gz"  # its gzip copy, sent to browsers that accept gzip
METRICS_JSON = "metrics.json"
REPORT_MD = "report.md"
PREDICTIONS_CSV = "predictions.csv"
PLOTS = ("confusion_matrix.png", "reliability.png", "risk_coverage.png")

# the artefacts, in build order
MODEL, INT8, GATE, SHORTLIST, METRICS, WEB = "model", "int8", "gate", "shortlist", "metrics", "web"
ARTEFACTS = (MODEL, INT8, GATE, SHORTLIST, METRICS, WEB)

# what each artefact is made from (direct inputs; voiding follows the table transitively)
DEPENDS_ON: dict[str, tuple[str, ...]] = {
    MODEL: (),
    INT8: (MODEL,),  # quantised from model.onnx, checked against it
    GATE: (MODEL, INT8),  # fitted on the served file's features and logits
    SHORTLIST: (MODEL, INT8, GATE),  # conformal cut-offs on the served, gated probabilities
    METRICS: (MODEL, INT8, GATE, SHORTLIST),  # measured on the served answer
    WEB: (MODEL, INT8, GATE),  # wraps the served graph, its temperature and the gate
}
# the files and card sections each artefact owns
FILES: dict[str, tuple[str, ...]] = {
    MODEL: (ONNX_FILE, HEAD_FILE, CARD_FILE),
    INT8: (INT8_FILE,),
    GATE: (GATE_FILE,),
    SHORTLIST: (),
    METRICS: (METRICS_JSON, REPORT_MD, PREDICTIONS_CSV, *PLOTS),
    WEB: (WEB_ONNX_FILE, WEB_ONNX_GZ),
}
SECTIONS: dict[str, tuple[str, ...]] = {
    MODEL: (),
    INT8: ("int8",),
    GATE: ("gate",),
    SHORTLIST: ("shortlist",),
    METRICS: ("metrics",),
    WEB: (),
}
# card section -> the artefact (build step) that writes it
SECTION_OWNER = {s: a for a, sections in SECTIONS.items() for s in sections}


def derived_from(artefact: str) -> list[str]:
    """Every artefact made from `artefact`, directly or not, in build order."""
    if artefact not in DEPENDS_ON:
        raise ValueError(f"unknown artefact {artefact!r}; one of {', '.join(ARTEFACTS)}")
    out: set[str] = set()
    changed = True
    while changed:
        changed = False
        for a, inputs in DEPENDS_ON.items():
            if a not in out and (artefact in inputs or out & set(inputs)):
                out.add(a)
                changed = True
    return [a for a in ARTEFACTS if a in out]


def file_sha256(path: Path) -> str:
    """A model file's content hash (read in 1 MB blocks): ties derived files (int8, caches,
    the browser model's URL) to the model.onnx they were made from. Remembered per (file, size,
    mtime), so the gate, the browser-model build and the Predictor they start hash a model once,
    and a rewritten file is hashed again."""
    st = os.stat(path)
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def served_file(model_dir: Path, card: ModelCard, int8: bool = True) -> tuple[str, Path, float]:
    """(precision, ONNX file, temperature) that serving runs: the int8 file only if asked,
    present, passed its check, and made from the fp32 file beside it (a re-exported model.onnx
    voids it); else model.onnx with the card's temperature. The server, the CLI, the gate and
    the browser model all choose here."""
    model_dir = Path(model_dir)
    fp32 = model_dir / card.files.get("model", ONNX_FILE)
    entry, name = card.int8, card.files.get("int8")
    if int8 and name and entry.get("passed") and (model_dir / name).is_file():
        if fp32.is_file() and entry.get("source_sha256") == file_sha256(fp32):
            return "int8", model_dir / name, float(entry.get("temperature", card.temperature))
    return "fp32", fp32, card.temperature


class ModelDir:
    """A model folder: its file names, its card, and every write a build step makes to it."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"ModelDir({str(self.path)!r})"

    # ------------------------------------------------------------------ reading

    def file(self, name: str) -> Path:
        """The path of one of the folder's files (a name above, e.g. GATE_FILE)."""
        return self.path / name

    def card(self) -> ModelCard:
        """The validated card (one clear ModelError if anything is off)."""
        return load_card(self.path)

    def served(self, card: ModelCard | None = None, int8: bool = True) -> tuple[str, Path, float]:
        """(precision, ONNX file, temperature) that serving runs; see `served_file`."""
        return served_file(self.path, card or self.card(), int8)

    def read_section(self, name: str) -> dict[str, Any]:
        """A card section by name ({} when the card has none)."""
        return dict(self.card().section(name))

    def present(self, artefact: str) -> bool:
        """Whether the folder holds `artefact` (its files, or its card section)."""
        files = [f for f in FILES[artefact] if f != CARD_FILE]
        if files:
            return all(self.file(f).is_file() for f in files[:1])
        card = self.card()
        return all(bool(card.section(s)) for s in SECTIONS[artefact])

    # ------------------------------------------------------------------ writing

    def write_model(self, staged: Path, card: ModelCard) -> list[str]:
        """Install model.onnx and head.npz from the folder `staged` with `card` (export's
        output, already checked); void everything made from the previous model. Returns the
        names of the files removed."""
        self.path.mkdir(parents=True, exist_ok=True)
        card.files = {"model": ONNX_FILE}
        save_card(card, staged)
        for f in (ONNX_FILE, HEAD_FILE, CARD_FILE):
            shutil.move(str(Path(staged) / f), self.path / f)
        return self._void_and_save(MODEL, card)

    def write_int8(self, staged_file: Path, entry: dict[str, Any],
                   card: ModelCard | None = None) -> list[str]:
        """Install the int8 file that passed its check and its card entry; void what was
        made from the previous served file."""
        card = card or self.card()
        shutil.move(str(staged_file), self.file(INT8_FILE))
        card.files = {**card.files, "model": card.files.get("model", ONNX_FILE),
                      "int8": INT8_FILE}
        card.int8 = {k: v for k, v in entry.items() if k != "temperature"}
        return self._void_and_save(INT8, card)

    def write_gate(self, save: Any, section: dict[str, Any], temperature: float,
                   threshold: float, card: ModelCard | None = None) -> list[str]:
        """The gate step's output: gate.npz (written by `save(path)`), the card's gate
        section, and the served file's temperature and threshold (their one writer)."""
        card = card or self.card()
        precision, _, _ = served_file(self.path, card)
        save(self.file(GATE_FILE))
        if precision == "int8":  # each file keeps its own temperature where `served` reads it
            card.int8 = {**card.int8, "temperature": temperature}
        else:
            card.temperature = temperature
        card.threshold = threshold
        card.gate = section
        return self._void_and_save(GATE, card)

    def write_section(self, name: str, data: dict[str, Any],
                      card: ModelCard | None = None) -> list[str]:
        """Write one card section (e.g. "shortlist", "metrics"); void what is made from the
        artefact that owns it. Returns the names of the files removed."""
        if name not in SECTION_OWNER:
            raise ValueError(f"unknown card section {name!r}; one of {sorted(SECTION_OWNER)}")
        card = card or self.card()
        card.set_section(name, data)
        return self._void_and_save(SECTION_OWNER[name], card)

    def void(self, artefact: str) -> list[str]:
        """Remove `artefact` and everything made from it (files and card sections)."""
        card = self.card()
        removed = self._clear(card, [artefact, *derived_from(artefact)])
        save_card(card, self.path)
        return removed

    def _void_and_save(self, artefact: str, card: ModelCard) -> list[str]:
        removed = self._clear(card, derived_from(artefact))
        save_card(card, self.path)
        return removed

    def _clear(self, card: ModelCard, artefacts: Iterable[str]) -> list[str]:
        removed = []
        for a in artefacts:
            if a == MODEL:
                raise ModelError("model.onnx is the base of a model folder; export a new one")
            for f in FILES[a]:
                if self.file(f).is_file():
                    self.file(f).unlink()
                    removed.append(f)
            if a == GATE:  # the run's threshold and temperature until a gate is fitted again
                before = card.gate.get("tuned_on", {}).get("threshold_before")
                if before is not None:
                    card.threshold = float(before)
                card.int8 = {k: v for k, v in card.int8.items() if k != "temperature"}
            if a == INT8:
                card.files = {k: v for k, v in card.files.items() if k != "int8"}
            for s in SECTIONS[a]:
                card.set_section(s, {})
        return removed
