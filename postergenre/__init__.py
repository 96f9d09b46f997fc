"""postergenre: Airflow-scheduled retraining of movie-genre-from-poster classifiers."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("postergenre")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
