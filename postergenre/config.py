"""One settings object for the whole project, read from ``POSTERGENRE_*`` environment variables.

S3 endpoint and credentials are deliberately *not* settings here: boto3 reads the standard AWS variables
(``AWS_ENDPOINT_URL_S3``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``), so MinIO,
SeaweedFS and AWS all work unchanged.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POSTERGENRE_", extra="ignore")

    home: Path = Field(Path(".postergenre"), description="Data root of the embedded default.")
    store_url: str = Field("", description="file:///path or s3://bucket/prefix; default <home>/store.")
    registry_url: str = Field("", description="file:///path or s3://bucket/prefix; default <home>/registry.")
    db_url: str = Field("", description="SQLAlchemy URL; default SQLite at <home>/postergenre.db.")

    seed: int = 42
    image_size: int = 224
    batch_size: int = 128
    transfer_concurrency: int = Field(32, description="Parallel object-store transfers.")

    # Genre-drift severity thresholds (Jensen-Shannon distance, base 2; population stability index).
    drift_warn_js: float = 0.05
    drift_alert_js: float = 0.10
    drift_warn_psi: float = 0.10
    drift_alert_psi: float = 0.25
    drift_psi_epsilon: float = Field(1e-4, description="Share given to empty bins so PSI stays finite.")

    # Caps on one ingest: a hostile or broken export is quarantined or refused, never allowed to fill memory,
    # the temp disk or the store (a 2 MB zip may hold a 1 GiB "poster").
    max_poster_bytes: int = Field(10 * 2**20, gt=0, description="Bigger poster files are quarantined unread.")
    max_csv_bytes: int = Field(256 * 2**20, gt=0, description="Largest genres.csv an ingest reads.")
    max_archive_bytes: int = Field(
        20 * 2**30, gt=0, description="Most bytes an archive (or an s3:// export) may expand to on disk."
    )
    max_compression_ratio: float = Field(
        100.0, gt=1.0, description="Uncompressed/compressed size above which archive members are refused."
    )
    max_image_pixels: int = Field(
        25_000_000, gt=0, description="Larger posters are quarantined, never decoded."
    )
    stale_temp_seconds: float = Field(
        3600.0, gt=0, description="Age after which temporaries left by a killed ingest are swept."
    )

    # Caps on model files read from outside (a weights .pth is a pickle that declares its own tensor sizes).
    max_tensor_bytes: int = Field(
        64 * 2**20, gt=0, description="Largest tensor a weights file may declare (Lite0's largest: 5 MB)."
    )
    max_weights_bytes: int = Field(
        512 * 2**20, gt=0, description="Most bytes all tensors of one weights file may take (Lite0: 19 MB)."
    )

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        self.home = self.home.expanduser().resolve()
        if not self.store_url:
            self.store_url = (self.home / "store").as_uri()
        if not self.registry_url:
            self.registry_url = (self.home / "registry").as_uri()
        if not self.db_url:
            self.db_url = f"sqlite:///{self.home / 'postergenre.db'}"
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests build their own ``Settings(...)`` instead)."""
    return Settings()
