"""TrainConfig: the one definition of a training run, its recipes and its validation.

Torch-free, so the CLI can build `kulit train`'s options from the fields without loading torch.
A new hyperparameter is one field here: the CLI option (named after the field, help from its
trailing comment) and the run directory's config.json follow. QuantizeConfig (what `kulit
quantize` does) lives here too, so `kulit --help` shows its defaults without loading the
quantiser.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from dataclasses import dataclass
from typing import Any

from kulit.errors import DataError
from kulit.serving.preprocess import Preprocessing

# Where the DermNet logo sits in a centre crop of a 640x480 photo (see README, source confound).
LOGO_BOX = (0.0, 0.64, 0.42, 0.95)
HEADS = ("linear", "paper")
SCHEDULES = ("constant", "cosine")  # learning rate over the epochs (benchmarks/levers.py)


@dataclass(frozen=True)
class TrainConfig:
    """One training run; the defaults are kulit's recipe, and the run dir stores it."""

    data: str = "../shared/data"  # the data folders' parent (or one folder of class folders)
    split_csv: str = "runs/data/split.csv"  # split.csv written by `kulit data`
    out: str = "runs/kulit"  # run directory
    recipe: str = "kulit"  # "kulit" or "paper": a named set of the defaults below
    backbone: str = "efficientnet-lite0"  # registry name (kulit.training.backbones)
    weights: str | None = None  # user weights file for the backbone (densenet201 needs one)
    pretrained: bool = True  # use the bundled ImageNet weights when available
    input_size: int = 224  # square input side in pixels
    head: str = "linear"  # "linear" (GAP -> fc) or "paper" (BN -> GAP -> 128 -> fc)
    hidden: int = 128  # paper head width
    dropout: float = 0.2  # before the last layer
    epochs: int = 100  # upper bound; early stopping may end sooner
    batch_size: int = 64  # images per optimiser step
    lr: float = 1e-3  # Adam(W) learning rate
    schedule: str = "constant"  # "constant" or "cosine" (decays to 0 by the last of --epochs)
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    label_smoothing: float = 0.1  # cross-entropy label smoothing
    balance: bool = False  # weight the loss by inverse class frequency
    views: int = 6  # cached views per training image (view 0 plain, the rest augmented)
    capture_aug: bool = True  # views imitate capture: context crops, low resolution, blur, WB
    source_balance: bool = True  # sample every (class, source) cell equally often per epoch
    clean_labels: bool = True  # leave out training photos cleanlab flags as likely mislabelled
    clean_sources: str = "skin8-web"  # comma-separated sources whose labels are checked
    clean_max_frac: float = 0.15  # at most this share of a checked source's class left out
    tta: bool = True  # average logits over the image and its mirror (linear head only)
    finetune_blocks: int = 4  # last backbone blocks trained on cached inputs; 0 = frozen base
    patience: int = 10  # epochs without val balanced-accuracy gain before stopping; 0 = off
    mask_logo: bool = True  # paint the logo corner out of every image (train and serve)
    dedupe: bool = True  # one image per duplicate group, so copies do not count twice
    seed: int = 0  # seeds every random choice
    cache_dir: str = ".cache/kulit"  # feature cache folder (the untrained part's outputs)
    cache: bool = True  # False recomputes the backbone every epoch (for the speed benchmark)
    threads: int = 2  # torch CPU threads

    def __post_init__(self) -> None:
        checks = [
            (self.batch_size > 0, "batch_size must be a positive whole number"),
            (self.lr > 0 and math.isfinite(self.lr), "lr must be a positive, finite number"),
            (0 <= self.dropout < 1, "dropout must be at least 0 and below 1"),
            (self.input_size > 0, "input_size must be a positive number of pixels"),
            (self.threads > 0, "threads must be at least 1"),
            (self.epochs > 0, "epochs must be at least 1"),
            (self.views > 0, "views must be at least 1"),
            (self.hidden > 0, "hidden must be at least 1"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be at least 0 and below 1"),
            (self.weight_decay >= 0 and math.isfinite(self.weight_decay),
             "weight_decay must be a finite number, 0 or more"),
            (self.patience >= 0, "patience must be 0 (off) or more"),
            (0 <= self.clean_max_frac < 1, "clean_max_frac must be at least 0 and below 1"),
            (self.finetune_blocks >= 0, "finetune_blocks must be 0 (frozen) or more"),
            (self.head in HEADS, f"head must be one of {', '.join(HEADS)}, not {self.head!r}"),
            (self.schedule in SCHEDULES,
             f"schedule must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise DataError(f"training config: {message}")

    @property
    def serve_tta(self) -> bool:
        """Mirror TTA as served: the export averages feature maps, which equals averaging
        logits only for a GAP -> linear head, so the paper head is served (and so evaluated
        and calibrated) without it."""
        return self.tta and self.head == "linear"

    def preprocessing(self) -> Preprocessing:
        """The card's preprocessing for this run: the backbone's normalisation, then ours."""
        from kulit.training.backbones import get_spec  # torch: only when a run is actually built

        p = get_spec(self.backbone).preprocessing(self.input_size)
        return dataclasses.replace(p, mask_box=LOGO_BOX if self.mask_logo else None,
                                   tta=self.serve_tta)


# Each recipe lists only how it differs from TrainConfig's defaults (which are kulit's).
RECIPES: dict[str, dict[str, Any]] = {
    "kulit": {},
    "paper": dict(
        input_size=64, head="paper", dropout=0.5, epochs=32, lr=1e-4, weight_decay=0.0,
        label_smoothing=0.0, views=1, tta=False, patience=0, mask_logo=False,
        finetune_blocks=0, capture_aug=False, source_balance=False, clean_labels=False,
    ),
}


def make_config(data: str, split_csv: str, recipe: str = "kulit", **overrides: Any) -> TrainConfig:
    """Defaults, then the recipe's differences, then any option the user set (None = unset)."""
    if recipe not in RECIPES:
        raise DataError(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise DataError(f"unknown training option(s): {', '.join(unknown)}")
    fields = {**RECIPES[recipe], **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(data=data, split_csv=split_csv, recipe=recipe, **fields)


def field_help() -> dict[str, str]:
    """Each TrainConfig field's trailing comment (its CLI help), read from the source."""
    try:
        source = inspect.getsource(TrainConfig)
    except (OSError, TypeError):  # no source (frozen app): options without help text
        return {}
    pattern = re.compile(r"^\s+(\w+): [^=]+=.*?#\s*(.+)$")
    return {m[1]: m[2].strip() for m in map(pattern.match, source.splitlines()) if m}


@dataclass(frozen=True)
class QuantizeConfig:
    """What `kulit quantize` (and `kulit export --int8`) does; recorded in the card."""

    calib_images: int = 300  # training photos the activation ranges are calibrated on
    min_agreement: float = 0.95  # top-1 agreement with fp32 on validation, each source
    max_bacc_drop: float = 0.01  # balanced accuracy may fall at most this much, each source
    seed: int = 0  # which training photos calibrate


# The trust gate's data (`kulit gate`, kulit.build.gate_fit): besides the in-scope SOURCES (rows
# of split.csv), folders of the data root, and the not-skin categories and other conditions its
# scorers are tuned on; the rest are held out and reported (leave-category-out,
# leave-condition-out).
NOT_SKIN_FOLDER = "not-skin"
# "none of these" from two sources (DermNet NZ, Atlas Dermatologico), so that a scorer cannot
# learn "DermNet style = other"
OTHER_FOLDERS = ("other-conditions", "atlas-other")
# At most half of the 11 not-skin categories, diverse on purpose (living, flat text, plain
# textures, food, machines); people, objects, scenes, indoor and plants are held out.
NOT_SKIN_TUNED = ("animals", "documents-text", "food", "plain-texture-blur", "vehicles")
# Conditions the "other" scorer is tuned on, named as in either folder; a condition found in
# both folders (acne, lichen planus, keloid, BCC ...) is on the same side in both. Each family
# of look-alikes of the 8 has members on both sides: held out are granuloma annulare and
# pityriasis rosea (ring ~ ringworm), pityriasis versicolor and tuberous sclerosis (pale ~
# vitiligo), naevi, BCC and xanthogranuloma (~ melanoma), erythema multiforme (~ herpes),
# papillomatosis and neurofibromas (~ warts), scabies (~ chickenpox).
OTHER_TUNED = (
    # other-conditions/ (DermNet NZ): 12 of 23
    "acne-vulgaris", "candidiasis", "cellulitis-erysipelas", "contact-dermatitis",
    "discoid-nummular-eczema", "hand-dermatitis", "leprosy", "lichen-planus", "melasma",
    "pityriasis-alba", "post-inflammatory-hyperpigmentation", "sunburn",
    # atlas-other/ (Atlas Dermatologico): 30 of 62
    "acanthosis-nigricans", "acne", "acrodermatitis-enteropathica", "actinic-keratosis",
    "allergic-contact-dermatitis", "calcinosis-cutis", "cheilitis", "dermatomyositis",
    "ehlers-danlos-syndrome", "erythema-annulare-centrifigum", "fixed-eruptions", "folliculitis",
    "fordyce-spots", "hailey-hailey-disease", "hidradenitis", "kaposi-sarcoma",
    "lichen-amyloidosis", "lichen-simplex", "myiasis", "naevus-comedonicus",
    "necrobiosis-lipoidica", "pediculosis-lids", "photodermatoses", "pityriasis-rubra-pilaris",
    "prurigo-nodularis", "sarcoidosis", "scleroderma", "seborrheic-dermatitis", "syringoma",
)


# ---------------------------------------------------------------- the data set and the build

DATA_ROOT = "../shared/data"  # the data folders' parent
SOURCES = ("skin8", "skin8-web", "atlas")  # class folders a model is trained and measured on
URGENT_CLASS = "Melanoma"  # the class behind the "see a doctor soon" alert and its cut-off
DEFAULT_MODEL_DIR = "models/kulit-skin8"  # the shipped model every command uses by default
TOP_K = 3  # conditions listed per answer
# `kulit build`'s steps, in order (kulit.build.pipeline)
BUILD_STEPS = ("data", "train", "export", "quantize", "gate", "shortlist", "evaluate",
               "export-web")


@dataclass(frozen=True)
class BuildConfig:
    """What `kulit build` makes and from what: data -> train -> ... -> export-web."""

    data_root: str = DATA_ROOT  # parent of the source folders, not-skin/ and other-conditions/
    sources: tuple[str, ...] = SOURCES  # class folders under data_root
    exclude: str | None = "data/exclude.txt"  # files to leave out (`kulit data --exclude`)
    data_out: str = "runs/data"  # split.csv and the data report
    run_dir: str = "runs/kulit"  # `kulit train`'s run directory
    model: str = DEFAULT_MODEL_DIR  # the model folder
    card_extra: str | None = "docs/skin8-card.json"  # JSON merged into card.json at export
    recipe: str = "kulit"  # training recipe (kulit.config.RECIPES)
    seed: int = 0  # split seed
    val_frac: float = 0.2  # validation share of the split
    test_frac: float = 0.1  # test share of the split
    state: str = "runs/build-state.json"  # each step's input hashes, for skipping
    train_options: tuple[tuple[str, Any], ...] = ()  # TrainConfig overrides, (name, value)
