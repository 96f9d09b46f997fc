"""The 19 TMDB genres used by letterboxd, and normalisation of the names found in exports."""

from __future__ import annotations

import re

GENRES: tuple[str, ...] = (
    "Action",
    "Adventure",
    "Animation",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Family",
    "Fantasy",
    "History",
    "Horror",
    "Music",
    "Mystery",
    "Romance",
    "Science Fiction",
    "TV Movie",
    "Thriller",
    "War",
    "Western",
)

_BY_KEY = {re.sub(r"\s+", " ", g).casefold(): g for g in GENRES}


def normalise_genre(name: str) -> str | None:
    """Return the canonical genre for ``name`` (any case, extra spaces), or None if unknown."""
    key = re.sub(r"\s+", " ", name.strip()).casefold()
    return _BY_KEY.get(key)


def genre_slug(genre: str) -> str:
    """A store-key-safe name for a genre: ``Science Fiction`` -> ``science-fiction``."""
    return re.sub(r"[^a-z0-9]+", "-", genre.casefold()).strip("-")
