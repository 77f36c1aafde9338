"""Find likely wrong labels in the training split before the model learns them.

Web-scraped labels are noisy (skin8-web: about 10-15% wrong or unusable, Melanoma worse). On the
frozen backbone's pooled features of each training photo, cross-validated logistic regression
gives out-of-fold probabilities; cleanlab's `find_label_issues` flags the photos whose given
label the other folds disagree with. Training then leaves them out; the run directory gets
`label_issues.csv` and a contact sheet `label_issues.jpg` to look at what was dropped.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
from PIL import Image, ImageDraw

N_FOLDS = 5


def out_of_fold_probs(features: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """[n, k] probabilities, each from a model that did not see that photo."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(
        StandardScaler(), LogisticRegression(C=0.05, max_iter=2000, class_weight="balanced")
    )
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(N_FOLDS, shuffle=True, random_state=seed)
    return cast(
        "np.ndarray", cross_val_predict(clf, features, labels, cv=folds, method="predict_proba"))


def find_issues(features: np.ndarray, labels: np.ndarray, seed: int, checked: np.ndarray,
                max_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """Boolean mask of likely label errors, and the out-of-fold probabilities behind it.

    Only `checked` photos (the sources whose labels are noisy) can be flagged, and at most
    `max_frac` of each class among them, lowest probability of the given label first: with a
    linear probe on frozen features, cleanlab alone flags every hard photo (a third of the
    training photos, DermNet's curated ones among them; README), not just wrong labels.
    """
    from cleanlab.filter import find_label_issues

    probs = out_of_fold_probs(features, labels, seed)
    flagged = np.asarray(find_label_issues(labels, probs, filter_by="prune_by_noise_rate"), bool)
    flagged &= checked
    p_given = probs[np.arange(len(labels)), labels]
    mask = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        cap = int(max_frac * np.sum(checked & (labels == c)))
        cand = np.flatnonzero(flagged & (labels == c))
        mask[cand[np.argsort(p_given[cand], kind="stable")][:cap]] = True
    return mask, probs


def write_issues(out: Path, files: Sequence[str], paths: Sequence[Path], sources: Sequence[str],
                 labels: np.ndarray, probs: np.ndarray, mask: np.ndarray,
                 classes: Sequence[str]) -> dict[str, dict[str, int]]:
    """label_issues.csv + a contact sheet; returns flagged counts per source and class."""
    order = np.flatnonzero(mask)
    # most confidently wrong first: lowest out-of-fold probability of the given label
    idx = [int(i) for i in order[np.argsort(probs[order, labels[order]], kind="stable")]]
    with open(out / "label_issues.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["file", "source", "given", "suggested", "p_given", "p_suggested"])
        for i in idx:
            j = int(probs[i].argmax())
            w.writerow([files[i], sources[i], classes[labels[i]], classes[j],
                        f"{probs[i, labels[i]]:.3f}", f"{probs[i, j]:.3f}"])
    _contact_sheet(out / "label_issues.jpg", [paths[i] for i in idx],
                   [f"{classes[labels[i]]}->{classes[int(probs[i].argmax())]}" for i in idx])
    counts: dict[str, dict[str, int]] = {}
    for i in idx:
        c = counts.setdefault(sources[i], {})
        c[classes[labels[i]]] = c.get(classes[labels[i]], 0) + 1
    return counts


def _contact_sheet(path: Path, images: Sequence[Path], captions: Sequence[str],
                   cell: int = 128, cols: int = 12, limit: int = 240) -> None:
    images, captions = list(images)[:limit], list(captions)[:limit]
    rows = max(1, -(-len(images) // cols))
    sheet = Image.new("RGB", (cols * cell, rows * (cell + 14)), "white")
    draw = ImageDraw.Draw(sheet)
    for n, (p, cap) in enumerate(zip(images, captions, strict=True)):
        x, y = (n % cols) * cell, (n // cols) * (cell + 14)
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                im.thumbnail((cell, cell))
                sheet.paste(im, (x, y))
        except OSError:
            continue
        draw.text((x + 2, y + cell), cap[:22], fill="black")
    sheet.save(path, quality=85)
