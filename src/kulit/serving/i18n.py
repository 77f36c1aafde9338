"""The one store of user text: texts.json, in Bahasa Indonesia and English, read through here.

Templates, routes, the API, `kulit predict` and the answer rule never hold words of their own:
they call `t(lang, key)` or `condition_info(cls, lang)`, so adding a language is one more block
per entry in texts.json. The 'not a diagnosis' disclaimer is `kulit.DISCLAIMER_ID` / `_EN`.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from kulit import DISCLAIMER_EN, DISCLAIMER_ID

LANGS = ("id", "en")
LANG_COOKIE = "lang"
TEXTS_FILE = Path(__file__).with_name("texts.json")
DISCLAIMERS = {"id": DISCLAIMER_ID, "en": DISCLAIMER_EN}


@lru_cache(maxsize=1)
def _load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(TEXTS_FILE.read_text(encoding="utf-8"))
    for lang, text in DISCLAIMERS.items():
        data["ui"][lang]["disclaimer"] = text
    return data


# UI, advice and answer strings: STRINGS[lang][key]
STRINGS: dict[str, dict[str, str]] = _load()["ui"]

# Metrics shown on /about, in this order; the rest of card.metrics stays in /api/v1/model.
METRICS = ("n", "accuracy", "balanced_accuracy", "macro_f1", "top3_accuracy", "ece")
PERCENT_METRICS = frozenset({"accuracy", "balanced_accuracy", "top3_accuracy"})


def normalize_lang(value: str | None) -> str | None:
    """'en', 'EN', 'en-US' -> 'en'; anything unsupported -> None."""
    if not value:
        return None
    code = value.strip().lower().split("-")[0].split("_")[0]
    return code if code in LANGS else None


def t(lang: str, key: str, **kw: Any) -> str:
    """The UI string `key` in `lang`, formatted with kw; falls back to English, then the key."""
    table = STRINGS.get(lang, STRINGS["en"])
    text = table[key] if key in table else STRINGS["en"].get(key, key)
    return text.format(**kw) if kw else text


def both(key: str, **kw: Any) -> dict[str, str]:
    """`key` in every language, e.g. the API's advice: {"en": ..., "id": ...}."""
    return {lang: t(lang, key, **kw) for lang in ("en", "id")}


def fmt_pct(p: float) -> str:
    """A probability as a whole percent; tiny non-zero values read '<1%' rather than '0%'."""
    if 0 < p < 0.005:
        return "<1%"
    return f"{round(100 * p)}%"


def fmt_num(x: float, lang: str, digits: int = 3) -> str:
    """A decimal with the language's separator (Indonesian writes 0,05)."""
    s = f"{x:.{digits}f}"
    return s.replace(".", ",") if lang == "id" else s


def load_conditions() -> dict[str, dict[str, dict[str, Any]]]:
    """The lay texts per class and language (texts.json `conditions`)."""
    conditions: dict[str, dict[str, dict[str, Any]]] = _load()["conditions"]
    return conditions


def condition_info(cls: str, lang: str) -> dict[str, Any]:
    """Name and texts of a class for lay readers; an unknown class gets its raw name only."""
    entry = load_conditions().get(cls)
    if entry is None:
        return {"name": cls, "known": False}
    text = entry.get(lang) or entry.get("en") or {}
    return {"name": text.get("name", cls), "known": True, **text}


def condition_name(cls: str, lang: str) -> str:
    return str(condition_info(cls, lang)["name"])


def join_or(names: list[str], lang: str) -> str:
    """'A', 'A or B', 'A, B or C' in `lang` (the shortlist's verdict)."""
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} {t(lang, 'list_or')} {names[-1]}"


def pair_notes(on_list: list[str], lang: str) -> list[dict[str, Any]]:
    """How to tell look-alikes apart (texts.json `pairs`), for the classes on a shortlist: a
    pair shows when every class it `covers` (else every class it names) is on the list."""
    out = []
    for pair in _load().get("pairs", []):
        if set(pair.get("covers") or pair["classes"]) <= set(on_list):
            out.append({"classes": pair["classes"], "text": pair.get(lang) or pair["en"],
                        "sources": pair.get("sources", []),
                        "covers": pair.get("covers") or pair["classes"]})
    return out
