"""What a snapshot consists of, computed from the checks alone (pure: no store, no files).

Everything ingest decides about the rows and posters lands here: which movies are usable, what is quarantined
and why, and the exact bytes of ``genres.csv``, ``posters.csv`` and ``quarantine.json``, whose hash is the
snapshot's content hash. Computing it before anything is uploaded is what lets a conflicting re-ingest be
refused before it stores a single orphan poster.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from postergenre.genres import GENRES
from postergenre.labels import collapse
from postergenre.poster_scan import PosterFile
from postergenre.validation import ExportError, ParsedGenres, PosterCheck, Rejected, sha256_bytes

DATA_FILES = ("genres.csv", "posters.csv", "quarantine.json")


def csv_bytes(header: list[str], rows: list[tuple]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode()


def json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def genre_counts(rows: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per-genre counts: ``raw`` = (movie, genre) rows, ``collapsed`` = movies after the least-common collapse."""
    raw = rows["genre"].value_counts()
    collapsed = collapse(rows)["genre"].value_counts() if len(rows) else pd.Series(dtype=int)
    return {
        "raw": {g: int(raw.get(g, 0)) for g in GENRES},
        "collapsed": {g: int(collapsed.get(g, 0)) for g in GENRES},
    }


@dataclass
class SnapshotContent:
    files: dict[str, bytes]  # DATA_FILES, in publishing order
    content_hash: str
    clean: list[tuple[int, str]]
    posters: dict[int, PosterCheck]
    uploads: dict[str, PosterFile]  # sha256 -> one file with that content, of the usable posters
    quarantined_blobs: dict[str, PosterFile]  # sha256 -> file, of rejected posters whose bytes are kept
    quarantine_counts: dict[str, int]
    counts: dict[str, int] = field(default_factory=dict)


def rows_by_movie(parsed: ParsedGenres) -> dict[int, list[str]]:
    grouped: dict[int, list[str]] = {}
    for movie_id, genre in parsed.rows:
        grouped.setdefault(movie_id, []).append(genre)
    return grouped


def build_content(
    parsed: ParsedGenres, files: list[PosterFile], checks: list[PosterCheck], rejected: list[Rejected]
) -> SnapshotContent:
    """Decide every movie and poster; ``rejected`` is what was refused before the checks (names, archives)."""
    genres_of = rows_by_movie(parsed)
    quarantine = parsed.rejected + rejected
    posters: dict[int, PosterCheck] = {}
    uploads: dict[str, PosterFile] = {}
    quarantined_blobs: dict[str, PosterFile] = {}
    for poster, check in zip(files, checks, strict=True):
        reason, detail = check.reason, check.detail
        if reason is None and poster.movie_id in posters:
            reason, detail = "duplicate_poster", f"movie {poster.movie_id} already has a poster"
        elif reason is None and poster.movie_id not in genres_of:
            reason, detail = "poster_without_genres", "no valid genre row for this id"
        if reason is None:
            posters[poster.movie_id] = check
            uploads[check.sha256] = poster
            continue
        kept = check.sha256 is not None and check.size > 0  # read, and not empty: its bytes go to quarantine
        quarantine.append(
            Rejected(
                reason,
                detail or "",
                movie_id=poster.movie_id,
                name=poster.name,
                sha256=check.sha256 if kept else None,
                size=None if kept else check.size or None,
            )
        )
        if kept:
            quarantined_blobs[check.sha256] = poster
    for movie_id in sorted(set(genres_of) - set(posters)):
        kept_out = ", ".join(genres_of[movie_id])
        quarantine.append(Rejected("no_valid_poster", f"rows kept out: {kept_out}", movie_id=movie_id))

    clean = sorted((m, g) for m, genres in genres_of.items() if m in posters for g in genres)
    counts = dict(sorted(Counter(r.reason for r in quarantine).items()))
    doc = {"counts": counts, "blank_lines": parsed.blank_lines, "items": [r.to_dict() for r in quarantine]}
    data = {
        "genres.csv": csv_bytes(["movie_id", "genre"], clean),
        "posters.csv": csv_bytes(
            ["movie_id", "sha256", "bytes", "format"],
            [(m, c.sha256, c.size, c.format) for m, c in sorted(posters.items())],
        ),
        "quarantine.json": json_bytes(doc),
    }
    content = SnapshotContent(
        files=data,
        content_hash=sha256_bytes(b"".join(data[name] for name in DATA_FILES)),
        clean=clean,
        posters=posters,
        uploads=uploads,
        quarantined_blobs=quarantined_blobs,
        quarantine_counts=counts,
        counts={
            "movies": len(posters),
            "rows": len(clean),
            "posters": len(posters),
            "input_rows": len(parsed.rows) + len(parsed.rejected),
            "blank_lines": parsed.blank_lines,
            "quarantined": len(quarantine),
        },
    )
    return content


def refuse_empty(parsed: ParsedGenres, content: SnapshotContent | None = None) -> None:
    """A snapshot without one usable movie trains nothing and breaks every later step: refuse to publish it."""
    if not parsed.rows and not parsed.rejected:
        raise ExportError("genres.csv has the header but no data rows: nothing to publish")
    if content is not None and not content.posters:
        top = ", ".join(f"{reason} {n}" for reason, n in content.quarantine_counts.items())
        raise ExportError(
            f"no usable movie in the export ({content.counts['input_rows']} rows; quarantined: {top})"
        )
