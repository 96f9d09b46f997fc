"""Backbones, the report's head, the frozen classifier, compilation and backbone weights handling."""

import keras
import numpy as np
import pytest

from postergenre.models import (
    CROSS_ENTROPY,
    DROPOUT_RATE,
    FIRST_UNITS,
    WeightsUnavailable,
    adapt_normalization,
    build_backbone,
    build_classifier,
    build_head,
    compile_head,
    features_dim,
)

SIZE = 32


@pytest.fixture(scope="module")
def posters() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny():
    return build_backbone("tiny", weights="none", image_size=SIZE, seed=3)


def test_tiny_backbone_pools_to_a_vector_and_is_seeded(tiny, posters):
    out = np.asarray(tiny(posters, training=False))
    assert out.shape == (len(posters), features_dim(tiny))
    same = build_backbone("tiny", weights=None, image_size=SIZE, seed=3)
    other = build_backbone("tiny", weights=None, image_size=SIZE, seed=4)
    np.testing.assert_array_equal(np.asarray(same(posters, training=False)), out)
    assert not np.allclose(np.asarray(other(posters, training=False)), out)


def test_weights_file_round_trip(tiny, posters, tmp_path):
    path = tmp_path / "tiny.weights.h5"
    tiny.save_weights(path)
    loaded = build_backbone("tiny", weights=path, image_size=SIZE, seed=99)  # a different random init first
    np.testing.assert_array_equal(
        np.asarray(loaded(posters, training=False)), np.asarray(tiny(posters, training=False))
    )


def test_bad_weights_arguments_fail_clearly(tmp_path):
    with pytest.raises(WeightsUnavailable, match="not found"):
        build_backbone("tiny", weights=tmp_path / "absent.weights.h5", image_size=SIZE)
    plain = tmp_path / "model.h5"
    plain.write_bytes(b"x")
    with pytest.raises(WeightsUnavailable, match=r"\.weights\.h5"):
        build_backbone("tiny", weights=plain, image_size=SIZE)
    with pytest.raises(WeightsUnavailable, match="no ImageNet"):
        build_backbone("tiny", weights="imagenet", image_size=SIZE)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg16", weights="none", image_size=SIZE)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Keras warns about each unmatched group before failing
def test_weights_of_another_architecture_are_rejected(tmp_path):
    path = tmp_path / "other.weights.h5"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save_weights(path)
    with pytest.raises(WeightsUnavailable, match="does not fit"):
        build_backbone("tiny", weights=path, image_size=SIZE)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_imagenet_download_offline_names_the_alternative(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no cached download to fall back on
    try:
        build_backbone("efficientnetv2b0", weights="imagenet", image_size=SIZE)
    except WeightsUnavailable as exc:
        assert "ImageNet" in str(exc) and ".weights.h5" in str(exc) and "\n" not in str(exc)
    else:
        pytest.skip("ImageNet weights were reachable (cache or network): nothing offline to test")


@pytest.mark.slow
@pytest.mark.parametrize(("name", "width"), [("efficientnetv2b0", 1280), ("resnet50", 2048)])
def test_keras_application_backbones_pool_to_their_documented_width(name, width, posters):
    backbone = build_backbone(name, weights="none", image_size=SIZE)
    assert features_dim(backbone) == width
    out = np.asarray(backbone(posters, training=False))
    assert out.shape == (len(posters), width) and np.isfinite(out).all()


def layer_kinds(model: keras.Model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


@pytest.mark.parametrize("dropout", [False, True])
def test_multiclass_head_matches_the_report(dropout):
    head = build_head(64, units=192, dropout=dropout, n_outputs=19, seed=1)
    expected = ["InputLayer", "Dense", "BatchNormalization", "Dense", "BatchNormalization"]
    assert layer_kinds(head) == expected + (["Dropout"] if dropout else []) + ["Dense"]
    fc1, fc2, out = (head.get_layer(n) for n in ("fc1", "fc2", "out"))
    assert (fc1.units, fc2.units, out.units) == (FIRST_UNITS, 192, 19)
    assert fc1.activation.__name__ == fc2.activation.__name__ == "relu"
    assert out.activation.__name__ == "softmax"
    if dropout:
        assert head.get_layer("dropout").rate == DROPOUT_RATE
    probs = np.asarray(head(np.ones((2, 64), np.float32), training=False))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_binary_head_ends_in_one_sigmoid_unit():
    head = build_head(16, units=64, dropout=False, n_outputs=1, first_units=32, seed=0)
    out = head.get_layer("out")
    assert (out.units, out.activation.__name__) == (1, "sigmoid")
    assert head.get_layer("fc1").units == 32


def test_heads_with_the_same_seed_are_identical():
    a, b = (build_head(8, units=64, dropout=True, n_outputs=19, seed=5) for _ in range(2))
    c = build_head(8, units=64, dropout=True, n_outputs=19, seed=6)
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


def test_classifier_freezes_the_backbone_and_composes(tiny, posters, tmp_path):
    head = build_head(features_dim(tiny), units=64, dropout=True, n_outputs=19, seed=2)
    model = build_classifier(tiny, head)
    assert model.input_shape == (None, SIZE, SIZE, 3) and model.output_shape == (None, 19)
    assert {id(w) for w in model.trainable_weights} == {id(w) for w in head.trainable_weights}
    direct = head(tiny(posters, training=False), training=False)
    np.testing.assert_allclose(np.asarray(model(posters, training=False)), np.asarray(direct), rtol=1e-6)
    # The registered artefact: saved and loaded as one file, it predicts the same from raw posters.
    path = tmp_path / "classifier.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        reloaded.predict(posters, verbose=0), model.predict(posters, verbose=0), rtol=1e-6
    )


def test_compile_head_picks_loss_and_metrics_by_kind():
    multi = compile_head(build_head(8, units=64, dropout=False, n_outputs=19), "multiclass")
    binary = compile_head(build_head(8, units=64, dropout=False, n_outputs=1), "binary")
    assert isinstance(multi.loss, keras.losses.CategoricalCrossentropy)
    assert isinstance(binary.loss, keras.losses.BinaryCrossentropy)
    assert isinstance(multi.optimizer, keras.optimizers.Adam)
    x, y = np.ones((4, 8), np.float32), np.eye(19, dtype=np.float32)[[0, 1, 2, 3]]
    logs = multi.evaluate(x, y, verbose=0, return_dict=True)
    assert {"loss", "accuracy", "recall"} <= set(logs)
    # A fresh softmax head is near uniform: the first loss is close to log(19) (a sanity check from keras-io).
    assert abs(logs["loss"] - np.log(19)) < 1.0


def test_compile_head_rejects_a_kind_that_does_not_fit_the_output():
    with pytest.raises(ValueError, match="one sigmoid unit"):
        compile_head(build_head(8, units=64, dropout=False, n_outputs=19), "binary")
    with pytest.raises(ValueError, match=">= 2 units"):
        compile_head(build_head(8, units=64, dropout=False, n_outputs=1), "multiclass")
    with pytest.raises(ValueError, match="kind"):
        compile_head(build_head(8, units=64, dropout=False, n_outputs=1), "multilabel")


def test_regularised_head_adds_normalization_input_dropout_and_l2():
    x = np.random.default_rng(0).normal(3.0, 2.0, (50, 8)).astype(np.float32)
    x[:, 5] = 7.0  # a feature constant on train
    head = build_head(
        8,
        units=64,
        dropout=True,
        n_outputs=19,
        dropout_rate=0.3,
        input_dropout=0.4,
        l2=1e-3,
        normalize_on=x,
        seed=0,
    )
    assert layer_kinds(head)[:3] == ["InputLayer", "Normalization", "Dropout"]
    assert head.get_layer("input_dropout").rate == 0.4 and head.get_layer("dropout").rate == 0.3
    assert len(head.losses) == 3  # one L2 term per Dense kernel: fc1, fc2, out
    normalized = np.asarray(head.get_layer("normalize")(x))
    np.testing.assert_allclose(normalized.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(np.delete(normalized.std(axis=0), 5), 1, rtol=1e-4)
    # The constant feature is centred, not divided by ~0: an unseen value stays a moderate number.
    unseen = x[:1].copy()
    unseen[0, 5] = 8.0
    assert np.asarray(head.get_layer("normalize")(unseen))[0, 5] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="dropout"):
        build_head(8, units=64, dropout=True, n_outputs=19, input_dropout=1.0)


def test_adapt_normalization_matches_keras_adapt_on_ordinary_features():
    x = np.random.default_rng(1).normal(size=(40, 6)).astype(np.float32)
    ours, theirs = keras.layers.Normalization(), keras.layers.Normalization()
    adapt_normalization(ours, x)
    theirs.adapt(x)
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(theirs(x)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="non-empty"):
        adapt_normalization(keras.layers.Normalization(), np.zeros((0, 6)))


def test_an_adapted_normalization_reads_its_variables_not_constants():
    """Compiled steps take the statistics as inputs (JAX would otherwise compile every head's programs afresh,
    ~2 s a head): a new value in the variable changes the output, and the layer owns no extra weights."""
    x = np.random.default_rng(2).normal(size=(40, 6)).astype(np.float32)
    layer = keras.layers.Normalization()
    adapt_normalization(layer, x)
    before = np.asarray(layer(x))
    assert len(layer.weights) == 3  # mean, variance, count: saved and loaded as before
    layer.adapt_mean.assign(np.asarray(layer.adapt_mean) + 1.0)
    np.testing.assert_allclose(np.asarray(layer(x)), before - 1.0 / np.sqrt(x.var(axis=0)), rtol=1e-4, atol=1e-5)


def test_a_normalizing_classifier_is_self_contained(tiny, posters, tmp_path):
    """The adapted statistics live in the head: the saved backbone+head predicts the same after a reload."""
    feats = np.asarray(tiny(posters, training=False))
    head = build_head(features_dim(tiny), units=64, dropout=False, n_outputs=19, normalize_on=feats, seed=2)
    model = build_classifier(tiny, head)
    path = tmp_path / "classifier.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        reloaded.predict(posters, verbose=0), model.predict(posters, verbose=0), rtol=1e-6
    )
    norm = [layer for layer in reloaded.layers[-1].layers if isinstance(layer, keras.layers.Normalization)][0]
    np.testing.assert_allclose(np.asarray(norm.adapt_mean), feats.mean(axis=0), rtol=1e-5, atol=1e-6)


def test_label_smoothing_changes_the_loss_but_not_the_cross_entropy_metric():
    x, y = np.ones((4, 8), np.float32), np.eye(19, dtype=np.float32)[[0, 1, 2, 3]]
    plain = compile_head(build_head(8, units=64, dropout=False, n_outputs=19, seed=3), "multiclass")
    smooth = compile_head(
        build_head(8, units=64, dropout=False, n_outputs=19, seed=3), "multiclass", label_smoothing=0.2
    )
    a = plain.evaluate(x, y, verbose=0, return_dict=True)
    b = smooth.evaluate(x, y, verbose=0, return_dict=True)
    assert a[CROSS_ENTROPY] == pytest.approx(a["loss"], rel=1e-5)
    assert b[CROSS_ENTROPY] == pytest.approx(a[CROSS_ENTROPY], rel=1e-6) and b["loss"] != pytest.approx(
        a["loss"]
    )
    assert smooth.loss.get_config()["label_smoothing"] == 0.2
    with pytest.raises(ValueError, match="label_smoothing"):
        compile_head(build_head(8, units=64, dropout=False, n_outputs=1), "binary", label_smoothing=1.0)
