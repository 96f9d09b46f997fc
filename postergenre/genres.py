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

CNN_MODEL = "genre-cnn"
"""The multi-class model's name, in the run store and the registry alike."""
OVA_MODEL_PREFIX = "genre-ova"

_BY_KEY = {re.sub(r"\s+", " ", g).casefold(): g for g in GENRES}


def normalise_genre(name: str) -> str | None:
    """Return the canonical genre for ``name`` (any case, extra spaces), or None if unknown."""
    key = re.sub(r"\s+", " ", name.strip()).casefold()
    return _BY_KEY.get(key)


def genre_slug(genre: str) -> str:
    """A store-key-safe name for a genre: ``Science Fiction`` -> ``science-fiction``."""
    return re.sub(r"[^a-z0-9]+", "-", genre.casefold()).strip("-")


def ova_model_name(genre: str) -> str:
    """The one-vs-all member of a genre (any case): ``genre-ova/science-fiction``; ValueError if unknown."""
    canonical = normalise_genre(genre)
    if canonical is None:
        raise ValueError(f"unknown genre {genre!r}")
    return f"{OVA_MODEL_PREFIX}/{genre_slug(canonical)}"


def model_name(target: str) -> str:
    """``genre-cnn`` or a genre name (any case) -> the model's one name (run store keys and registry)."""
    if target == CNN_MODEL:
        return CNN_MODEL
    if normalise_genre(target) is None:
        raise ValueError(f"unknown training target {target!r}: use {CNN_MODEL!r} or one of the 19 genres")
    return ova_model_name(target)
