"""What a case may hold beyond the photo: closed lists (no free text that could carry a name
or an ID number) and the reviewer's diagnosis rule. Their words are in texts.json."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from kulit.serving.i18n import both

ROLES = ("health_worker", "reviewer", "admin")
BODY_SITES = ("face", "scalp", "neck", "trunk", "arm", "hand", "leg", "foot", "genital",
              "other")
AGE_BANDS = ("0-4", "5-14", "15-24", "25-44", "45-64", "65+")
SEXES = ("female", "male")
UNSURE = "unsure"
OTHER_PREFIX = "other:"
OTHER_MAX = 80  # characters after "other:"; a condition's name, not a story

CREATE_ROLES = frozenset({"health_worker", "reviewer"})  # who may save a case
REVIEW_ROLES = frozenset({"reviewer"})  # who records the confirmed diagnosis
WIDE_ROLES = frozenset({"reviewer", "admin"})  # who sees every case of their clinic


class FieldError(ValueError):
    """A field value outside its list; the message names the field and what is allowed."""


def check_choice(name: str, value: str | None, allowed: Sequence[str]) -> str | None:
    """`value` if in `allowed` ("" and None = not given), else FieldError."""
    if value is None or value == "":
        return None
    if value not in allowed:
        raise FieldError(f"{name}: {value!r} is not one of {', '.join(allowed)}")
    return value


def check_diagnosis(value: str, classes: Sequence[str]) -> str:
    """One of `classes`, "unsure", or "other: <name>" (at most OTHER_MAX characters)."""
    value = " ".join(str(value).split())
    if value in classes or value == UNSURE:
        return value
    if value.lower().startswith(OTHER_PREFIX):
        rest = value[len(OTHER_PREFIX):].strip()
        if rest and len(rest) <= OTHER_MAX:
            return f"{OTHER_PREFIX} {rest}"
    raise FieldError(f"diagnosis: one of {', '.join(classes)}, '{UNSURE}', or "
                     f"'{OTHER_PREFIX} <condition>' (at most {OTHER_MAX} characters)")


def parse_bool(name: str, value: str | None) -> bool | None:
    """A form or multipart boolean: true/1/on/yes, false/0/off/no; absent = None."""
    if value is None or value == "":
        return None
    v = value.strip().lower()
    if v in ("true", "1", "on", "yes"):
        return True
    if v in ("false", "0", "off", "no"):
        return False
    raise FieldError(f"{name}: {value!r} is not true or false")


def consent_text_sha256() -> str:
    """The consent text as shown, in both languages, hashed: which wording a case agreed to."""
    texts = {k: both(k) for k in ("clinic_consent_text", "clinic_research_consent_text")}
    return hashlib.sha256(json.dumps(texts, sort_keys=True).encode()).hexdigest()
