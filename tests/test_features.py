"""Embed once, train many: cached features train the same head as the frozen backbone end to end.

Decision on float16: the cache stores float16, so a head trained on it sees inputs rounded to 11 significant
bits. The equivalence is therefore proven in two exact steps rather than with a loose tolerance:
(1) training on the embedded features (kept in float32) gives the same head as end-to-end training with the
backbone frozen, and (2) the cached float16 features are exactly those float32 features rounded to float16.
"""

import io

import keras
import numpy as np
import pytest
from PIL import Image, ImageDraw

from postergenre.features import (
    CACHE_VERSION,
    embed,
    embed_with,
    feature_cache_key,
    has_features,
    load_features,
    save_features,
    weights_id,
)
from postergenre.images import make_dataset
from postergenre.models import build_backbone, build_classifier, build_head, compile_head, features_dim
from postergenre.storage import NotFound, open_store

SIZE, BATCH, GOOD = 32, 16, 64


def poster(rng: np.random.Generator) -> bytes:
    w, h = int(rng.integers(20, 60)), int(rng.integers(30, 90))
    img = Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x0, y0 = int(rng.integers(0, w - 4)), int(rng.integers(0, h - 4))
        box = (x0, y0, x0 + int(rng.integers(3, w - x0)), y0 + int(rng.integers(3, h - y0)))
        draw.rectangle(box, fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def posters(tmp_path_factory):
    """64 decodable posters with two broken ones (positions 5 and 40) among them, and 19-genre labels."""
    folder = tmp_path_factory.mktemp("posters")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(GOOD + 2):
        paths.append(folder / f"{i}.jpg")
        paths[-1].write_bytes(b"" if i == 5 else b"not a poster" if i == 40 else poster(rng))
    labels = np.eye(19, dtype=np.float32)[rng.integers(0, 19, len(paths))]
    return paths, labels


@pytest.fixture(scope="module")
def backbone():
    return build_backbone("tiny", weights="none", image_size=SIZE, seed=0)


def head_weights(head: keras.Model) -> list[np.ndarray]:
    return [np.asarray(w) for w in head.weights]  # includes BatchNorm moving statistics


LEARNING_RATE, EPOCHS = 1e-3, 2


@pytest.mark.parametrize(
    ("dropout", "xla"),
    [
        (False, False),
        pytest.param(True, False, marks=pytest.mark.slow),
        pytest.param(False, True, marks=pytest.mark.slow),  # XLA compilation is slow on CPU
    ],
)
def test_head_on_cached_features_equals_end_to_end_training_with_frozen_backbone(
    posters, backbone, dropout, xla
):
    """Same seeds, same batches in the same order, no augmentation: the two routes train the same head.

    Without XLA both routes run the same kernels and the heads agree bit for bit. With XLA (Keras' default on
    GPUs and under JAX) the two training steps are different compiled programs whose roundings differ in the
    last bits; Adam divides each gradient by its own running RMS, so a weight whose gradient is rounding noise
    can still move by up to about the learning rate per step. The bound below is that, and predictions agree
    closely.
    """
    paths, labels = posters
    features, kept, stats = embed_with(backbone, paths, image_size=SIZE, batch_size=BATCH, dtype=np.float32)
    assert stats.skipped == 2 and kept.sum() == GOOD == len(features)

    def fresh_head():
        # The regularised head: its Normalization is adapted on the cached (train) features, so the end-to-end
        # model standardises the backbone's output with exactly those statistics.
        return build_head(
            features_dim(backbone),
            units=64,
            dropout=dropout,
            n_outputs=19,
            input_dropout=0.2 if dropout else 0.0,
            l2=1e-4,
            normalize_on=features,
            seed=7,
        )

    def compile_(model):
        return compile_head(
            model, "multiclass", learning_rate=LEARNING_RATE, label_smoothing=0.1, jit_compile=xla
        )

    cached = compile_(fresh_head())
    cached.fit(features, labels[kept], batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0)

    end_to_end_head = fresh_head()
    classifier = compile_(build_classifier(backbone, end_to_end_head))
    dataset, _ = make_dataset(paths, labels, image_size=SIZE, batch_size=BATCH, shuffle_seed=None)
    classifier.fit(dataset, epochs=EPOCHS, shuffle=False, verbose=0)

    trained, initial = head_weights(cached), head_weights(fresh_head())
    fc1 = [np.asarray(w) for w in (cached.get_layer("fc1").kernel, fresh_head().get_layer("fc1").kernel)]
    assert not np.allclose(*fc1)  # training did move the weights
    np.testing.assert_array_equal(trained[0], initial[0])  # and not the adapted mean (the first weight)
    steps = EPOCHS * len(dataset)
    for a, b in zip(trained, head_weights(end_to_end_head), strict=True):
        if xla:
            np.testing.assert_allclose(a, b, rtol=0, atol=2 * LEARNING_RATE * steps)
        else:
            np.testing.assert_array_equal(a, b)
    images = np.concatenate(list(make_dataset(paths, None, image_size=SIZE, batch_size=BATCH)[0]))
    np.testing.assert_allclose(
        cached.predict(features, verbose=0), classifier.predict(images, verbose=0), rtol=1e-3, atol=1e-5
    )


def test_cached_features_are_the_float32_features_rounded_to_float16(posters, backbone):
    paths, _ = posters
    exact, kept32, _ = embed_with(backbone, paths, image_size=SIZE, batch_size=BATCH, dtype=np.float32)
    cached, kept16, stats = embed(
        paths, backbone_name="tiny", weights="none", image_size=SIZE, batch_size=BATCH, seed=0
    )
    assert cached.dtype == np.float16 and cached.shape == (GOOD, features_dim(backbone))
    np.testing.assert_array_equal(kept16, kept32)
    assert stats.skipped_indices == (5, 40)
    np.testing.assert_array_equal(cached, exact.astype(np.float16))


def test_embedding_does_not_depend_on_the_batch_size(posters, backbone):
    paths, _ = posters
    a, _, _ = embed_with(backbone, paths[:20], image_size=SIZE, batch_size=7, dtype=np.float32)
    b, _, _ = embed_with(backbone, paths[:20], image_size=SIZE, batch_size=20, dtype=np.float32)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_embed_of_nothing_usable_is_empty(tmp_path, backbone):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"")
    features, kept, stats = embed_with(backbone, [bad], image_size=SIZE, batch_size=4)
    assert features.shape == (0, features_dim(backbone)) and not kept.any() and stats.skipped == 1


def test_cache_round_trip_through_the_store(tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    key = feature_cache_key("2024-05-27", "tiny", "none", SIZE)
    ids = np.array([10, 3, 7_000_000_001], dtype=np.int64)
    feats = np.random.default_rng(1).normal(size=(3, 5)).astype(np.float16)
    assert not has_features(store, key, "train")
    save_features(store, key, "train", ids, feats)
    assert has_features(store, key, "train") and not has_features(store, key, "test")
    got_ids, got = load_features(store, key, "train")
    assert got.dtype == np.float16 and got_ids.dtype == np.int64
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(got, feats)
    with pytest.raises(NotFound):
        load_features(store, key, "test")


def test_save_rejects_mismatched_rows_and_bad_split_names(tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    key = feature_cache_key("s1", "tiny", "none", SIZE)
    with pytest.raises(ValueError, match="do not match"):
        save_features(store, key, "train", np.arange(2), np.zeros((3, 4), np.float16))
    with pytest.raises(ValueError, match="split"):
        save_features(store, key, "../train", np.arange(3), np.zeros((3, 4), np.float16))


def test_cache_key_changes_with_everything_that_changes_the_vectors():
    base = ("snap-1", "efficientnetv2b0", "imagenet", 224)
    variants = [
        ("snap-2", "efficientnetv2b0", "imagenet", 224),
        ("snap-1", "resnet50", "imagenet", 224),
        ("snap-1", "efficientnetv2b0", "none", 224),
        ("snap-1", "efficientnetv2b0", "imagenet", 192),
    ]
    keys = {feature_cache_key(*args) for args in [base, *variants]}
    assert len(keys) == 1 + len(variants)
    assert all(CACHE_VERSION in key for key in keys)
    for bad in (("../x", "tiny", "none", 32), ("s", "ti/ny", "none", 32), ("s", "tiny", "", 32)):
        with pytest.raises(ValueError):
            feature_cache_key(*bad)


def test_weights_id_names_the_file_by_content(tmp_path):
    path = tmp_path / "b.weights.h5"
    path.write_bytes(b"first")
    first = weights_id(path)
    assert first.startswith("sha256-") and weights_id(str(path)) == first
    path.write_bytes(b"second")
    assert weights_id(path) != first
    assert weights_id("imagenet") == "imagenet" and weights_id(None) == weights_id("none") == "none"
