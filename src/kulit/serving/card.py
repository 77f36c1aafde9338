"""ModelCard: the contract from training to serving, stored as card.json beside model.onnx."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
)

from kulit.errors import ModelError
from kulit.serving.answer import MELANOMA_KEY, NOT_SKIN_KEY, OTHER_KEY
from kulit.serving.preprocess import RESIZE_MODES, Preprocessing

SCHEMA_VERSION = 1
CARD_FILE = "card.json"  # the other file names of a model folder: kulit.serving.model_dir
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


Unit = Annotated[float, Field(ge=0, le=1)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Schema(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class _PreprocessingSchema(_Schema):
    input_size: int = Field(ge=8, le=4096)
    resize: Literal[RESIZE_MODES] = RESIZE_MODES[0]  # type: ignore[valid-type]
    crop_pct: float = Field(1.0, gt=0, le=1)
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    mean: tuple[Unit, Unit, Unit]
    std: tuple[Positive, Positive, Positive]
    background: tuple[int, int, int] = (255, 255, 255)
    mask_box: tuple[Unit, Unit, Unit, Unit] | None = None
    draft_scale: int = Field(2, ge=0, le=16)
    tta: bool = False


class _Int8Schema(_Schema):
    file: str
    passed: bool
    source_sha256: str
    temperature: Positive | None = None


# the gate's cut-offs, by the card keys the answer rule reads
_GateSchema = create_model(  # type: ignore[call-overload]
    "_GateSchema", __base__=_Schema,
    **{key: (Unit | None, None) for key in (NOT_SKIN_KEY, OTHER_KEY, MELANOMA_KEY)})


class CardSchema(_Schema):
    """card.json as serving needs it: checked once at load, so a bad value stops a command
    at start with the field's name (never a later 500, never a silent default)."""

    schema_version: Literal[1]
    name: str = Field(min_length=1)
    classes: list[str] = Field(min_length=2)
    backbone: str
    preprocessing: _PreprocessingSchema
    temperature: Positive
    threshold: Unit
    recipe: str = "kulit"
    head: Literal["linear", "paper"] = "linear"
    inputs: dict[str, str] = {}
    outputs: dict[str, str] = {}
    metrics: dict[str, Any] = {}
    data: dict[str, Any] = {}
    seed: int = 0
    train_config: dict[str, Any] = {}
    kulit_version: str = ""
    limits: list[str | dict[str, str]] = []
    gate: _GateSchema = {}  # type: ignore[valid-type]
    quality: dict[str, Any] = {}  # checked by kulit.serving.quality.QualityLimits.from_card
    files: dict[str, str] = {}
    int8: _Int8Schema | None = None  # {} = no int8 file

    @field_validator("classes")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v) or not all(v):
            raise ValueError("must list distinct, non-empty class names")
        return v

    @field_validator("int8", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return None if v == {} else v


def validate_card(d: Any, where: str = CARD_FILE) -> None:
    """Raise one ModelError line naming the first bad field of a card dict."""
    try:
        CardSchema.model_validate(d)
    except ValidationError as e:
        errors = e.errors()
        first = errors[0]
        field_name = ".".join(str(p) for p in first["loc"] if not str(p).startswith("_"))
        got = first.get("input")
        shown = "" if first["type"] == "missing" else f" (got {got!r})"[:80]
        more = f"; {len(errors) - 1} more problem(s)" if len(errors) > 1 else ""
        raise ModelError(f"{where}: {field_name or 'card'}: {first['msg']}{shown}{more}"
                         ) from None


@dataclass
class ModelCard:
    """Everything serving needs to know about a model; nothing is retyped by hand."""

    name: str  # model id shown to users, e.g. "kulit-skin8"
    classes: list[str]  # index = logit position
    backbone: str  # registry name, e.g. "efficientnet-lite0"
    preprocessing: Preprocessing  # resize/crop/normalisation, shared with training
    temperature: float = 1.0  # logits are divided by this before softmax (fitted on val)
    threshold: float = 0.5  # top-1 probability from which an answer is confident
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
    # the model files by role: "model" (fp32; model.onnx when absent) and "int8" when
    # `kulit quantize` passed
    files: dict[str, str] = field(default_factory=dict)
    # the int8 file's temperature, check figures (fp32 vs int8 per source) and settings; {} = none
    int8: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    # sections this class has no field for (e.g. "shortlist"), kept as written
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["preprocessing"] = self.preprocessing.to_dict()
        extra = d.pop("extra")
        return {**d, **{k: v for k, v in extra.items() if k not in d}}

    def section(self, name: str) -> dict[str, Any]:
        """A card section by name: a field (gate, int8, metrics, ...) or an extra one."""
        if name in self.__dataclass_fields__ and name != "extra":
            value = getattr(self, name)
            if not isinstance(value, dict):
                raise ValueError(f"card field {name!r} is not a section")
            return value
        return dict(self.extra.get(name) or {})

    def set_section(self, name: str, data: dict[str, Any]) -> None:
        """Replace a card section ({} clears it). Build steps go through ModelDir."""
        if name in self.__dataclass_fields__ and name != "extra":
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"card field {name!r} is not a section")
            setattr(self, name, dict(data))
        elif data:
            self.extra[name] = dict(data)
        else:
            self.extra.pop(name, None)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = CARD_FILE) -> ModelCard:
        """A card from its JSON dict, checked by CardSchema (one ModelError naming the field)."""
        if d.get("schema_version") != SCHEMA_VERSION:
            raise ModelError(
                f"card.json schema_version {d.get('schema_version')!r} is not {SCHEMA_VERSION}"
            )
        validate_card(d, where)
        try:
            d = dict(d)
            d["preprocessing"] = Preprocessing.from_dict(d["preprocessing"])
            fields = set(cls.__dataclass_fields__) - {"extra"}
            known = {k: v for k, v in d.items() if k in fields}
            card = cls(**known, extra={k: v for k, v in d.items() if k not in fields})
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"card.json is malformed: {e}") from None
        return card


def save_card(card: ModelCard, model_dir: Path) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / CARD_FILE
    path.write_text(json.dumps(card.to_dict(), indent=2, sort_keys=False) + "\n")
    return path


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
    return ModelCard.from_dict(d, str(path))
