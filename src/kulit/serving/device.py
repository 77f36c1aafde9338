"""The on-device check's configuration: what the page needs to answer in the browser.

Serving reads it (kulit.web.routes_device); the browser model itself is built by
`kulit.build.webmodel`. The answer rule's parameters come from the card, the texts from the one
text store, so the browser and the server answer alike. Torch-free.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from kulit.config import TOP_K
from kulit.serving import i18n
from kulit.serving.answer import MELANOMA_KEY, NOT_SKIN_KEY, OTHER_KEY, SOON_CLASSES, URGENT_CLASSES
from kulit.serving.card import ModelCard
from kulit.serving.gate import load_gate
from kulit.serving.model_dir import WEB_ONNX_FILE, file_sha256
from kulit.serving.quality import ISSUES, THUMB_SIDE, QualityLimits
from kulit.serving.shortlist import MAX_NAMED, SECTION, ShortlistRule

WEB_INPUT = "image_u8"  # the browser model's input: uint8 [N, S, S, 3], the server's centre crop


def measures_quality(input_size: int) -> bool:
    """Whether the browser model can measure photo quality on this crop as is (no whole-factor
    reduction before the quality thumbnail)."""
    return THUMB_SIDE <= input_size < 2 * THUMB_SIDE


def _gz_size(path: Path) -> int | None:
    """Bytes on the wire when the browser accepts gzip (the copy built beside the model)."""
    gz = path.with_name(path.name + ".gz")
    return gz.stat().st_size if gz.is_file() else None


def _texts() -> dict[str, dict[str, str]]:
    """Both languages' UI strings, from the one text store."""
    return {lang: dict(i18n.STRINGS[lang]) for lang in i18n.LANGS}


def quality_limits(card: ModelCard) -> dict[str, Any]:
    """kulit.serving.quality's limits (card overrides on top) and the order issues are named in."""
    return {**asdict(QualityLimits.from_card(card.quality)), "issues": list(ISSUES)}


def device_config(card: ModelCard, model_dir: Path) -> dict[str, Any]:
    """What the page needs to answer on the device; the answer rule's parameters from the card."""
    web_path = Path(model_dir) / WEB_ONNX_FILE
    has_gate = load_gate(Path(model_dir)) is not None
    gate = card.gate if has_gate else {}
    sl = ShortlistRule.from_card(card.section(SECTION), card.classes)
    return {
        "model": {
            "name": card.name,
            "url": f"/device/{WEB_ONNX_FILE}?v={file_sha256(web_path)[:16]}"
            if web_path.is_file() else None,
            "input": WEB_INPUT,
            "input_size": card.preprocessing.input_size,
            # resize_crop's geometry and filter and the background, for the page's own crop
            "crop_pct": card.preprocessing.crop_pct,
            "interpolation": card.preprocessing.interpolation,
            "background": list(card.preprocessing.background),
            "has_gate": has_gate,
            # the graph measures the crop's quality (else the page checks only the photo's size)
            "has_quality": measures_quality(card.preprocessing.input_size),
            "size": web_path.stat().st_size if web_path.is_file() else None,
            "size_gz": _gz_size(web_path),
        },
        "rule": {
            "classes": card.classes,
            "threshold": card.threshold,
            "top_k": TOP_K,
            "urgent_classes": sorted(URGENT_CLASSES & set(card.classes)),
            "soon_classes": sorted(SOON_CLASSES & set(card.classes)),
            "max_named": MAX_NAMED,
            "shortlist": None if sl is None else {"level": sl.level,
                                                  "cutoffs": [float(c) for c in sl.cutoffs]},
            NOT_SKIN_KEY: gate.get(NOT_SKIN_KEY),
            OTHER_KEY: gate.get(OTHER_KEY),
            MELANOMA_KEY: gate.get(MELANOMA_KEY),
            "quality": quality_limits(card),
        },
        "texts": _texts(),
        "class_names": {lang: {c: i18n.condition_name(c, lang) for c in card.classes}
                        for lang in i18n.LANGS},
    }
