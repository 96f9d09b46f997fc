"""The caps one ingest enforces, as a small value object the data-plane modules share.

The defaults are the ``Settings`` field defaults (one source of truth); ``from_settings`` takes the configured
values. Kept apart from ``config`` so the archive and poster code need no settings object to be tested.
"""

from __future__ import annotations

from dataclasses import dataclass

from postergenre.config import Settings


def _default(name: str):
    return Settings.model_fields[name].default


@dataclass(frozen=True)
class Limits:
    poster_bytes: int = _default("max_poster_bytes")
    csv_bytes: int = _default("max_csv_bytes")
    archive_bytes: int = _default("max_archive_bytes")
    compression_ratio: float = _default("max_compression_ratio")
    image_pixels: int = _default("max_image_pixels")
    # Poster bytes (and decoded pixels) held in memory at once by the checking threads, whatever their number.
    memory_bytes: int = 256 * 2**20

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            poster_bytes=settings.max_poster_bytes,
            csv_bytes=settings.max_csv_bytes,
            archive_bytes=settings.max_archive_bytes,
            compression_ratio=settings.max_compression_ratio,
            image_pixels=settings.max_image_pixels,
        )


def env_name(field: str) -> str:
    """The environment variable that sets a ``Settings`` field, for error messages that say what to change."""
    return f"POSTERGENRE_{field.upper()}"
