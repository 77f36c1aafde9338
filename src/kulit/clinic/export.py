"""`kulit clinic export --confirmed`: reviewed cases with research consent as one more
`kulit data` source: `<Class>/<case id>.jpg` and a manifest.csv (file, class, source, body
site, skin-tone estimate). No age, sex, dates, names or answers leave the database.

Re-exporting into the same folder removes the photos of cases deleted since, so an erasure
reaches the training data at the next export (and the next `kulit data`)."""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

from sqlalchemy import select

from kulit.build.skintone import estimate
from kulit.clinic import vocab
from kulit.clinic.models import Case, Clinic
from kulit.clinic.store import PHOTO_SUFFIX, CaseStore, audit
from kulit.errors import KulitError, ensure_writable_dir

MANIFEST = "manifest.csv"  # the name kulit.dataprep.split reads per source folder
COLUMNS = ("file", "class", "source", "body_site", "skin_tone", "ita")
SOURCE = "kulit clinic (consented cases, reviewer-confirmed diagnosis)"
# skin_tone: kulit.build.skintone's band (I-II, III-IV, V-VI) of the skin around the lesion,
# estimated from pixels (ITA°); empty when too little skin shows. A band describes a group of
# photos, never one person.


def exportable(case: Case) -> bool:
    d = case.diagnosis
    return bool(case.research_consent and d and d != vocab.UNSURE
                and not d.startswith(vocab.OTHER_PREFIX))


def _safe_class(name: str) -> str:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise KulitError(f"diagnosis {name!r} cannot be a folder name")
    return name


def export_cases(store: CaseStore, out: Path, clinic: str | None = None) -> list[str]:
    """Write the export; the summary lines to print."""
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise KulitError(f"--out {out}: not empty and not an earlier export (no {MANIFEST}); "
                         "choose an empty folder")
    ensure_writable_dir(out, "--out")
    rows: list[dict[str, str]] = []
    skipped: Counter[str] = Counter()
    with store.session() as db:
        q = select(Case).where(Case.diagnosis.is_not(None)).order_by(Case.id)
        if clinic is not None:
            c = db.scalar(select(Clinic).where(Clinic.name == clinic))
            if c is None:
                raise KulitError(f"--clinic: no clinic named {clinic!r}")
            q = q.where(Case.clinic_id == c.id)
        for case in db.scalars(q):
            if not case.research_consent:
                skipped["no research consent"] += 1
                continue
            if not exportable(case):
                skipped["unsure or other"] += 1
                continue
            src = store.photo_path(case)
            if not src.is_file():
                skipped["photo file missing"] += 1
                continue
            cls = _safe_class(case.diagnosis or "")
            data = src.read_bytes()
            tone = estimate(data)
            rel = f"{cls}/{case.id}{PHOTO_SUFFIX}"
            dest = out / rel
            dest.parent.mkdir(exist_ok=True)
            if not dest.is_file() or dest.read_bytes() != data:
                dest.write_bytes(data)
            rows.append({"file": rel, "class": cls, "source": SOURCE,
                         "body_site": case.body_site or "", "skin_tone": tone.band or "",
                         "ita": "" if tone.ita is None else f"{tone.ita:.1f}"})
            audit(db, "cli", "export", case, f"to {out.name}/{rel}")
    keep = {r["file"] for r in rows}
    removed = 0
    for path in sorted(out.glob(f"*/*{PHOTO_SUFFIX}")):
        if path.relative_to(out).as_posix() not in keep:
            path.unlink()
            removed += 1
    for folder in out.iterdir():
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: r["file"]))
    (out / MANIFEST).write_text(buf.getvalue(), encoding="utf-8")
    classes = Counter(r["class"] for r in rows)
    lines = [f"exported {len(rows)} case(s) in {len(classes)} class(es) to {out}"
             + (f"; removed {removed} photo(s) of cases no longer exported" if removed else "")]
    if classes:
        lines.append("per class: " + ", ".join(f"{k} {v}" for k, v in sorted(classes.items())))
    if skipped:
        lines.append("reviewed but not exported: " + ", ".join(
            f"{v} {k}" for k, v in sorted(skipped.items())))
    lines.append(f"next: kulit data <other folders> {out}")
    return lines
