"""Prediction with champions: bad posters get their own error rows, broken champions fail naming themselves."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hostile_checks import huge_png
from PIL import Image

from postergenre import registry
from postergenre.calibration import Platt
from postergenre.genres import GENRES
from postergenre.serving import CNN, NoChampion, ServingError, predict_posters
from postergenre.storage import open_store

SIZE = 16


def tiny_model(outputs: int, activation: str):
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    return keras.Model(inputs, keras.layers.Dense(outputs, activation=activation)(x))


def register_champion(
    settings, tmp_path, name: str, metrics: dict, *, outputs: int, activation: str, signature: dict | None = None,
    extra_files: dict | None = None,
) -> str:
    """Save a tiny Keras model as ``name``'s champion (with ``signature.json`` when given); returns its version."""
    import json

    path = tmp_path / f"{name.replace('/', '_')}.keras"
    tiny_model(outputs, activation).save(path)
    store = open_store(settings.registry_url)
    files = {"model.keras": path, **({"signature.json": json.dumps(signature).encode()} if signature else {})}
    files.update(extra_files or {})
    version = registry.register_version(
        store, name, files=files, metrics=metrics, lineage={"test": True}, version="v1"
    )["version"]
    registry.promote(store, name, version, actor="test", reason="fixture")
    return version


@pytest.fixture
def cnn_champion(settings, tmp_path):
    return register_champion(
        settings,
        tmp_path,
        CNN,
        {"test": {"classes": list(GENRES)}},
        outputs=len(GENRES),
        activation="softmax",
    )


def _png(width=20, height=30) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buf, "PNG")
    return buf.getvalue()


def posters(tmp_path) -> dict[str, str | None]:
    """Poster files by name -> the error their row must carry (None: a good poster)."""
    folder = tmp_path / "posters"
    folder.mkdir(parents=True)
    noise = np.random.default_rng(0).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "JPEG")
    files = {
        "good.png": (_png(), None),
        "text.jpg": (b"<html>404</html>", "is not an image"),
        "zero.jpg": (b"", "is empty"),
        "cut.jpg": (buf.getvalue()[:20000], "truncated or corrupt JPEG"),
        "bomb.png": (huge_png(), "400000000 pixels, over the cap"),
        "good2.png": (_png(40, 10), None),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    (folder / "dir.jpg").mkdir()
    expected = {str(folder / n): e for n, (_, e) in files.items()}
    expected[str(folder / "dir.jpg")] = "is a directory"
    expected[str(folder / "missing.jpg")] = "does not exist"
    return expected


def test_bad_posters_get_their_own_error_rows_and_good_ones_are_predicted(settings, tmp_path, cnn_champion):
    expected = posters(tmp_path)
    result = predict_posters(list(expected), top_k=2, settings=settings)
    assert result["version"] == cnn_champion and result["failed"] == 6
    assert [row["poster"] for row in result["predictions"]] == list(expected)  # input order kept
    for row, error in zip(result["predictions"], expected.values(), strict=True):
        if error is None:
            assert "error" not in row and len(row["genres"]) == 2
        else:
            assert error in row["error"] and row["poster"] in row["error"] and row["genres"] == []
            assert "\n" not in row["error"]


def test_only_bad_posters_fail_without_needing_a_champion(settings, tmp_path):
    # All but the cut JPEG, whose header is fine: only decoding (at the champion's input size) finds it out.
    expected = {p: e for p, e in posters(tmp_path).items() if e is not None and not p.endswith("cut.jpg")}
    result = predict_posters(list(expected), settings=settings)
    assert result["failed"] == len(expected) and all("error" in row for row in result["predictions"])
    with pytest.raises(NoChampion):
        predict_posters([p for p, e in posters(tmp_path / "again").items() if e is None], settings=settings)


def test_a_champion_with_unusable_metrics_names_itself(settings, tmp_path):
    register_champion(
        settings, tmp_path, CNN, {"test": {"classes": ["Drama"]}}, outputs=19, activation="softmax"
    )
    (tmp_path / "p.png").write_bytes(_png())
    with pytest.raises(ServingError, match="genre-cnn v1: metrics.json has no list of 19 class names"):
        predict_posters([tmp_path / "p.png"], settings=settings)


def test_a_tampered_champion_is_refused_every_time_and_never_cached(settings, tmp_path, cnn_champion):
    store = open_store(settings.registry_url)
    store.put_bytes(f"models/genre-cnn/versions/{cnn_champion}/model.keras", b"tampered")
    (tmp_path / "p.png").write_bytes(_png())
    for _ in range(2):  # the second call must not load what the first one downloaded
        with pytest.raises(registry.CorruptVersion, match="does not match its registered digest"):
            predict_posters([tmp_path / "p.png"], settings=settings)
    cache = settings.home / "cache" / "models" / "genre-cnn"
    assert not cache.exists() or list(cache.iterdir()) == []


def test_ova_members_predict_with_their_thresholds(settings, tmp_path):
    for genre, threshold in (("Drama", 0.0), ("Western", 1.0)):
        register_champion(
            settings,
            tmp_path,
            registry.ova_model_name(genre),
            {"threshold": threshold},
            outputs=1,
            activation="sigmoid",
        )
    (tmp_path / "p.png").write_bytes(_png())
    result = predict_posters(
        [tmp_path / "p.png", tmp_path / "nope.png"], model="genre-ova", settings=settings
    )
    assert result["members"] == 2 and result["failed"] == 1
    good, bad = result["predictions"]
    assert [g["genre"] for g in good["genres"]] == ["Drama"] and "does not exist" in bad["error"]


def test_an_ova_member_with_a_bad_threshold_names_itself(settings, tmp_path):
    register_champion(
        settings,
        tmp_path,
        registry.ova_model_name("Drama"),
        {"threshold": "high"},
        outputs=1,
        activation="sigmoid",
    )
    (tmp_path / "p.png").write_bytes(_png())
    with pytest.raises(ServingError, match="genre-ova/drama v1: metrics.json threshold 'high'"):
        predict_posters([tmp_path / "p.png"], model="genre-ova", settings=settings)


def test_unknown_model_is_refused_before_reading_anything(settings, tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        predict_posters([tmp_path / "nothing.png"], model="genre-xyz", settings=settings)


def _signature(genre: str, backbone: str) -> dict:
    from postergenre.provenance import signature

    return signature(model=registry.ova_model_name(genre), classes=["other", genre], kind="binary",
                     image_size=SIZE, backbone=backbone, weights_id="imagenet")


def test_ova_members_with_different_signatures_are_refused_naming_them(settings, tmp_path):
    for genre, backbone in (("Drama", "efficientnetv2b0"), ("Western", "resnet50")):
        register_champion(settings, tmp_path, registry.ova_model_name(genre), {"threshold": 0.5}, outputs=1,
                          activation="sigmoid", signature=_signature(genre, backbone))
    (tmp_path / "p.png").write_bytes(_png())
    with pytest.raises(ServingError, match="members expect different inputs") as caught:
        predict_posters([tmp_path / "p.png"], model="genre-ova", settings=settings)
    assert "Drama v1" in str(caught.value) and "resnet50" in str(caught.value)


def test_ova_serves_the_true_genre_thresholds_and_a_calibrated_argmax(settings, tmp_path):
    """The multi-label threshold (chosen on val's true genre lists) wins over the member's own F1 threshold;
    the argmax compares calibrated scores, so a member that always says 'yes' does not win it."""
    members = {
        "Drama": {"threshold": 1.0, "multilabel_threshold": 0.0, "calibration": {"a": 1.0, "b": 0.0}},
        "Western": {"threshold": 0.0, "multilabel_threshold": 1.0, "calibration": {"a": 0.0, "b": -9.0}},
    }
    for genre, metrics in members.items():
        register_champion(settings, tmp_path, registry.ova_model_name(genre), metrics, outputs=1,
                          activation="sigmoid", signature=_signature(genre, "efficientnetv2b0"))
    (tmp_path / "p.png").write_bytes(_png())
    row = predict_posters([tmp_path / "p.png"], model="genre-ova", settings=settings)["predictions"][0]
    assert [g["genre"] for g in row["genres"]] == ["Drama"] and row["genres"][0]["threshold"] == 0.0
    assert row["argmax"] == "Drama"


def _val_rows(rng, n=600):
    """Validation rows of two members on the same movies; Drama's scores are inflated by +3 logits."""
    y = rng.integers(0, 2, n)
    logits = rng.normal(0, 1, (n, 2)) + 1.5 * np.eye(2)[y]
    logits[:, 0] += 3.0
    ids = np.arange(1000, 1000 + n)
    return {g: (ids, 1 / (1 + np.exp(-logits[:, j])), (y == j).astype(np.int8)) for j, g in enumerate(("Drama", "War"))}


def test_the_argmax_calibration_is_fitted_jointly_for_one_runs_members_else_platt():
    from postergenre.calibration import fit_joint_members
    from postergenre.serving import Champion, argmax_calibrations

    rows = _val_rows(np.random.default_rng(0))
    platt = {"calibration": {"a": 1.0, "b": -3.0}}

    def members(rows_of):
        return {g: (g, Champion(None, "v1", platt, None, rows_of(g))) for g in ("Drama", "War")}

    method, joint = argmax_calibrations(members(rows.get))
    assert method == "vector-scaling" and joint == fit_joint_members(rows)
    assert joint["Drama"].b - joint["War"].b < -2  # the inflation is taken out
    shifted = {**rows, "War": (rows["War"][0] + 1, *rows["War"][1:])}  # another run's movies
    for rows_of in (shifted.get, lambda g: rows[g] if g == "Drama" else None):
        method, calibrations = argmax_calibrations(members(rows_of))
        assert method == "platt" and calibrations["War"] == Platt(1.0, -3.0)


def test_ova_serves_the_joint_calibration_from_the_registered_val_rows(settings, tmp_path):
    from postergenre.calibration import ARGMAX_VAL_FILE, argmax_val_bytes

    rows = _val_rows(np.random.default_rng(1))
    for genre in ("Drama", "War"):
        register_champion(settings, tmp_path, registry.ova_model_name(genre), {"threshold": 0.5}, outputs=1,
                          activation="sigmoid", signature=_signature(genre, "efficientnetv2b0"),
                          extra_files={ARGMAX_VAL_FILE: argmax_val_bytes(*rows[genre])})
    (tmp_path / "p.png").write_bytes(_png())
    row = predict_posters([tmp_path / "p.png"], model="genre-ova", settings=settings)["predictions"][0]
    assert row["argmax_calibration"] == "vector-scaling" and row["argmax"] in ("Drama", "War")


def test_an_unusable_argmax_val_file_names_its_member(settings, tmp_path):
    from postergenre.calibration import ARGMAX_VAL_FILE

    for genre in ("Drama", "War"):
        register_champion(settings, tmp_path, registry.ova_model_name(genre), {"threshold": 0.5}, outputs=1,
                          activation="sigmoid", signature=_signature(genre, "efficientnetv2b0"),
                          extra_files={ARGMAX_VAL_FILE: b"not an npz"})
    (tmp_path / "p.png").write_bytes(_png())
    with pytest.raises(ServingError, match=f"v1: {ARGMAX_VAL_FILE} is unusable"):
        predict_posters([tmp_path / "p.png"], model="genre-ova", settings=settings)
