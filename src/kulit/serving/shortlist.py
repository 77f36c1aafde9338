"""The shortlist: the conditions a photo may show, with a measured guarantee (conformal sets).

`kulit shortlist` (kulit.build.shortlist_fit) calibrates one probability cut-off per class on
the validation photos of every source, for the served file, and stores them in the card's
"shortlist" section with the level (default 0.9): a class is on a photo's shortlist when its
calibrated probability is at least its cut-off. At the 0.9 level the right condition is on the
list for about 9 photos in 10 of each calibration source (split-conformal; the card keeps the
test figures). Serving needs only the cut-offs: one comparison per class.

Two rules make the list usable: it always holds the most likely class (an empty conformal set
means "nothing fits well"; naming the top class only makes the list cover more), and a list of
one whose class is not a confident answer (top probability below the card's threshold) takes
the next most likely class too, so a single named condition is always a confident one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SECTION = "shortlist"  # the card section `kulit shortlist` writes
DEFAULT_LEVEL = 0.9  # the guarantee asked for when the model folder does not set one
MAX_NAMED = 3  # a longer list is status "uncertain": kulit cannot narrow it down


@dataclass(frozen=True)
class ShortlistRule:
    """The card's cut-offs, one per class in card order, and the level they were fitted for."""

    level: float
    cutoffs: np.ndarray  # [C] P(class) >= cutoff -> on the list

    @classmethod
    def from_card(cls, section: Mapping[str, Any] | None,
                  classes: Sequence[str]) -> ShortlistRule | None:
        """The rule from card.shortlist; None when the model has no calibrated shortlist."""
        cut = (section or {}).get("cutoffs")
        if not isinstance(cut, Mapping) or set(cut) != set(classes):
            return None
        return cls(float(section["level"]),  # type: ignore[index]
                   np.array([float(cut[c]) for c in classes], np.float64))

    def members(self, probs: np.ndarray, threshold: float) -> list[int]:
        """Class indices on the shortlist of one photo, most likely first (see the module
        docstring for the two usability rules)."""
        p = np.asarray(probs, np.float64)
        order = np.argsort(-p, kind="stable")
        on = [int(i) for i in order if p[i] >= self.cutoffs[i]]
        if not on or on[0] != order[0]:  # the most likely class is always named, first
            on = [int(order[0])] + [i for i in on if i != order[0]]
        if len(on) == 1 and p[order[0]] < threshold and len(p) > 1:
            on.append(int(order[1]))
        return on


def guarantee_tenths(section: Mapping[str, Any] | None) -> int | None:
    """The guarantee for the page, in tenths ("about 9 times out of 10"): the measured coverage
    on every test photo that got a list (card.shortlist.figures, `kulit shortlist`), rounded;
    None without figures. Never the level typed in: what was measured."""
    try:
        r = section["figures"]["per_source"]["all"]["coverage"]["rate"]  # type: ignore[index]
    except (KeyError, TypeError):
        return None
    return None if r is None else int(round(10 * float(r)))
