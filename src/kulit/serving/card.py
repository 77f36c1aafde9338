"""ModelCard: the contract from training to serving, stored as card.json beside model.onnx."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kulit.errors import ModelError
from kulit.serving.preprocess import Preprocessing

SCHEMA_VERSION = 1
CARD_FILE = "card.json"
ONNX_FILE = "model.onnx"
INT8_FILE = "model-int8.onnx"  # written by `kulit quantize` only if it passes its check
HEAD_FILE = "head.npz"  # head weights for the torch-free Grad-CAM
# model.onnx's tensor names: the one input, then the outputs in graph order
INPUT = "image"  # float32 [N,3,H,W], preprocessed as card.preprocessing says
LOGITS = "logits"  # float32 [N,C], before the temperature
FEATURES = "features"  # float32 [N,K,h,w], last conv feature map (Grad-CAM)
FIRST_LAYER = "first_layer"  # float32 [N,F,H/2,W/2], first conv layer's maps
OUTPUTS = (LOGITS, FEATURES, FIRST_LAYER)


# A card text a person reads: one string per language ({"en": ..., "id": ...}), or a plain
# string, which older cards hold and which is English.
CardText = str | dict[str, str]


def card_text(value: CardText, lang: str) -> tuple[str, str]:
    """(text, its language) of a card text in `lang`, else in English, else any language."""
    if isinstance(value, str):
        return value, "en"
    for code in (lang, "en", *value):
        if value.get(code):
            return str(value[code]), code
    return "", lang


@dataclass
class ModelCard:
    """Everything serving needs to know about a model; nothing is retyped by hand."""

    name: str  # model id shown to users, e.g. "kulit-skin8"
    classes: list[str]  # index = logit position
    backbone: str  # registry name, e.g. "efficientnet-lite0"
    preprocessing: Preprocessing  # resize/crop/normalisation, shared with training
    temperature: float = 1.0  # logits are divided by this before softmax (fitted on val)
    threshold: float = 0.5  # top-1 probability below this -> "uncertain"
    recipe: str = "kulit"  # "kulit" or "paper"
    head: str = "linear"  # "linear" (GAP->fc) or "paper" (BN->GAP->fc1->ReLU->fc2)
    inputs: dict[str, str] = field(default_factory=lambda: {INPUT: "float32[N,3,H,W]"})
    outputs: dict[str, str] = field(
        default_factory=lambda: {LOGITS: "float32[N,C]", FEATURES: "float32[N,K,h,w]",
                                 FIRST_LAYER: "float32[N,F,H/2,W/2]"}
    )
    metrics: dict[str, Any] = field(default_factory=dict)  # test-split numbers
    data: dict[str, Any] = field(default_factory=dict)  # hash, sources, licence, counts
    seed: int = 0
    train_config: dict[str, Any] = field(default_factory=dict)
    kulit_version: str = ""
    # known limits, in plain words: {"en": ..., "id": ...} per limit (a plain str = English)
    limits: list[CardText] = field(default_factory=list)
    # trust gate cut-offs (gate scores, melanoma cut-off, per-source figures); {} = none
    gate: dict[str, Any] = field(default_factory=dict)
    # photo-quality limits (kulit.serving.quality): min side, blur, exposure; {} = defaults
    quality: dict[str, Any] = field(default_factory=dict)
    # the model files by role: "model" (fp32, always) and "int8" when `kulit quantize` passed
    files: dict[str, str] = field(default_factory=lambda: {"model": ONNX_FILE})
    # the int8 file's temperature, check figures (fp32 vs int8 per source) and settings; {} = none
    int8: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["preprocessing"] = self.preprocessing.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        if d.get("schema_version") != SCHEMA_VERSION:
            raise ModelError(
                f"card.json schema_version {d.get('schema_version')!r} is not {SCHEMA_VERSION}"
            )
        try:
            d = dict(d)
            d["preprocessing"] = Preprocessing.from_dict(d["preprocessing"])
            known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
            card = cls(**known)
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"card.json is malformed: {e}") from None
        if not card.classes or len(set(card.classes)) != len(card.classes):
            raise ModelError("card.json must list distinct classes")
        if not card.temperature > 0:
            raise ModelError("card.json temperature must be positive")
        return card


def save_card(card: ModelCard, model_dir: Path) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / CARD_FILE
    path.write_text(json.dumps(card.to_dict(), indent=2, sort_keys=False) + "\n")
    return path


def file_sha256(path: Path) -> str:
    """A model file's content hash (read in 1 MB blocks): ties derived files (int8, caches,
    the browser model's URL) to the model.onnx they were made from. Remembered per (file, size,
    mtime), so the gate, the browser-model build and the Predictor they start hash a 14 MB
    model once, and a rewritten file is hashed again."""
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
    voids it); else model.onnx with the card's temperature. The server, the CLI and the
    browser model all choose here."""
    model_dir = Path(model_dir)
    fp32 = model_dir / card.files.get("model", ONNX_FILE)
    entry, name = card.int8, card.files.get("int8")
    if int8 and name and entry.get("passed") and (model_dir / name).is_file():
        if fp32.is_file() and entry.get("source_sha256") == file_sha256(fp32):
            return "int8", model_dir / name, float(entry["temperature"])
    return "fp32", fp32, card.temperature


def load_card(model_dir: Path) -> ModelCard:
    """Read and validate a model directory's card, with one clear error if anything is off."""
    model_dir = Path(model_dir)
    if not model_dir.exists():
        raise ModelError(f"model directory not found: {model_dir}")
    path = model_dir / CARD_FILE
    if not path.is_file():
        raise ModelError(f"{model_dir} is not a kulit model: {CARD_FILE} is missing")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise ModelError(f"{path}: cannot read ({e.strerror or e})") from None
    if not isinstance(d, dict):
        raise ModelError(f"{path}: must hold a JSON object, not {type(d).__name__}")
    return ModelCard.from_dict(d)
