"""Backbone ("tail") and head builders for the report's two classifiers, in backend-agnostic Keras 3.

Report, section 2: a frozen ImageNet CNN (EfficientNetV2B0; ResNet50 is interchangeable at 224x224) pooled
to a feature vector, then a head of three fully connected layers: FC+ReLU, FC+ReLU, each followed by batch
normalisation, an optional dropout before the output, and Softmax over the 19 genres (multi-class) or a single
sigmoid unit (each one-vs-all binary classifier, section 3). Every model takes float RGB in 0..255 at
``image_size`` (what ``images.py`` produces) and carries its own preprocessing, so a registered model needs
nothing but posters. The head keeps the report's layers as its base and can add what it lacked against
memorising a small training split: input standardisation (an adapted ``Normalization``), dropout on the
features, a tunable dropout rate, L2 penalties and label smoothing (all off by default: the report's head).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import keras
import numpy as np

BACKBONES = ("efficientnetv2b0", "resnet50", "lite0", "tiny")
DEFAULT_BACKBONE = "efficientnetv2b0"
# The report gives neither the first FC layer's width nor the dropout rate: 256 and 0.5 are our choice.
FIRST_UNITS = 256
DROPOUT_RATE = 0.5
HeadKind = Literal["multiclass", "binary"]
CROSS_ENTROPY = "cross_entropy"
"""Name of the plain cross-entropy metric: ``val_cross_entropy`` is what early stopping and tuning compare."""


def _lazy_tensorflow():
    """Keras' lazy TensorFlow module (internal, hence looked up defensively): probing it imports TensorFlow."""
    return getattr(getattr(keras.src.utils, "module_utils", None), "tensorflow", None)


def keras_without_tensorflow() -> bool:
    """Make Keras treat TensorFlow as absent for the rest of this process, if it runs on another backend and
    nothing imported TensorFlow yet; returns whether it now does.

    For head tasks only (``task_guards.head_backend``): they feed numpy arrays, never ``tf.data``. Keras probes
    TensorFlow, importing it, to seed ``tf.data`` (``keras.utils.set_random_seed``) and to recognise
    ``tf.TensorShape`` while saving a model: 3-5 s and ~300 MB per head task on JAX
    (benchmarks/bench_orchestration.py). Code that imports TensorFlow itself still can; Keras just does not hand
    it TensorFlow objects.
    """
    lazy_tf = _lazy_tensorflow()
    if keras.backend.backend() == "tensorflow" or "tensorflow" in sys.modules or lazy_tf is None:
        return False
    if getattr(lazy_tf, "_available", None) is None:
        lazy_tf._available = False
    return lazy_tf._available is False


class WeightsUnavailable(RuntimeError):
    """Backbone weights could not be obtained (offline ImageNet download, missing or mismatched file)."""


def _resolve_weights(weights: str | Path | None) -> str | Path | None:
    """``"imagenet"`` -> Keras' download; ``None``/``"none"`` -> random; else a ``.weights.h5`` path."""
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        return None
    if isinstance(weights, str) and weights == "imagenet":
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise WeightsUnavailable(f"backbone weights file not found: {path}")
    if not path.name.endswith(".weights.h5"):
        raise WeightsUnavailable(f"backbone weights must be a Keras '.weights.h5' file, got {path.name}")
    return path


def _tiny(image_size: int, seed: int) -> keras.Model:
    """A few conv+BN+ReLU+pool blocks, seeded: fast, deterministic stand-in for tests and the demo."""
    inputs = keras.Input((image_size, image_size, 3), name="poster")
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    for i, filters in enumerate((8, 16, 32)):
        block = f"block{i + 1}"  # named like the Keras applications' blocks, for finetune.unfreeze_top
        x = keras.layers.Conv2D(
            filters,
            3,
            padding="same",
            use_bias=False,
            kernel_initializer=keras.initializers.HeNormal(seed + i),
            name=f"{block}_conv",
        )(x)
        x = keras.layers.BatchNormalization(name=f"{block}_bn")(x)
        x = keras.layers.ReLU(name=f"{block}_relu")(x)
        x = keras.layers.MaxPooling2D(name=f"{block}_pool")(x)
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, outputs, name="tiny")


def _keras_application(name: str, weights: str | None, image_size: int) -> keras.Model:
    shape = (image_size, image_size, 3)
    if name == "efficientnetv2b0":
        return keras.applications.EfficientNetV2B0(
            include_top=False, weights=weights, input_shape=shape, pooling="avg", include_preprocessing=True
        )
    # ResNet50 has no preprocessing layer of its own: put preprocess_input (RGB->BGR, ImageNet mean) inside.
    inputs = keras.Input(shape, name="poster")
    base = keras.applications.ResNet50(include_top=False, weights=weights, input_shape=shape, pooling="avg")
    return keras.Model(inputs, base(keras.applications.resnet50.preprocess_input(inputs)), name="resnet50")


def build_backbone(
    name: str = DEFAULT_BACKBONE,
    *,
    weights: str | Path | None = "imagenet",
    image_size: int = 224,
    seed: int = 0,
) -> keras.Model:
    """A feature extractor: ``(batch, image_size, image_size, 3)`` float 0..255 -> ``(batch, d)`` pooled.

    ``weights``: ``"imagenet"`` (Keras downloads them; fails offline with ``WeightsUnavailable``; for
    ``lite0`` they come converted from the ``postergenre[lite0]`` package, see ``lite0.py``), ``None`` or
    ``"none"`` (random init; only ``tiny`` is seeded), or a path to a ``.weights.h5`` file saved from the same
    architecture (the air-gapped production route: built random, then loaded).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    resolved = _resolve_weights(weights)
    if name == "tiny" and resolved == "imagenet":
        raise WeightsUnavailable("the 'tiny' backbone has no ImageNet weights; use weights='none' or a file")
    if name == "tiny":
        model = _tiny(image_size, seed)
    elif name == "lite0":  # ImageNet weights from an installed package, converted once: no network
        from postergenre.lite0 import build_lite0, ensure_lite0_weights

        if resolved == "imagenet":
            resolved = ensure_lite0_weights()
        model = build_lite0(image_size)
    else:
        try:
            model = _keras_application(name, "imagenet" if resolved == "imagenet" else None, image_size)
        except Exception as exc:
            if resolved != "imagenet":
                raise
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise WeightsUnavailable(
                f"could not get ImageNet weights for {name} ({reason}); offline or air-gapped, pass "
                "weights=<path to a .weights.h5 saved from this backbone> (or weights='none' for random)"
            ) from exc
    if isinstance(resolved, Path):
        try:
            model.load_weights(resolved)
        except (ValueError, KeyError, OSError) as exc:
            raise WeightsUnavailable(
                f"{resolved} does not fit backbone {name} at {image_size}px: {exc}"
            ) from exc
    return model


def features_dim(backbone: keras.Model) -> int:
    """Width of the pooled feature vector (1280 for EfficientNetV2B0 and Lite0, 2048 for ResNet50)."""
    return int(backbone.output_shape[-1])


def adapt_normalization(layer: keras.layers.Normalization, x_train: np.ndarray) -> None:
    """Set a ``Normalization`` layer's mean and variance from the training features (float64, exact).

    Same statistics as ``Normalization.adapt`` on an array, except that a feature constant on the training split
    gets variance 1 (scikit-learn's ``StandardScaler`` rule): Keras would divide it by 1e-7, and a pooled
    channel that is always 0 on train but not on a test poster would then reach the dense layers as ~1e7.
    """
    x = np.asarray(x_train, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"need a non-empty (rows, features) array to adapt on, got shape {x.shape}")
    if not layer.built:
        layer.build((None, x.shape[1]))
    variance = x.var(axis=0)
    layer.adapt_mean.assign(x.mean(axis=0))
    layer.adapt_variance.assign(np.where(variance > 1e-12, variance, 1.0))
    layer.count.assign(len(x))
    layer.finalize_state()
    # Keras turns the adapted statistics into constants, which JAX bakes into every compiled train and predict
    # step: each head adapted on other features then compiled all its programs afresh (~2 s a head, 5 bags per
    # OvA member). Reading the variables instead keeps one program per shape; a loaded model (finalize_state
    # again) reads constants, with the same values.
    object.__setattr__(layer, "mean", layer.adapt_mean)  # not tracked again: the layer owns these variables
    object.__setattr__(layer, "variance", layer.adapt_variance)


def build_head(
    input_dim: int,
    *,
    units: int,
    dropout: bool,
    n_outputs: int,
    first_units: int = FIRST_UNITS,
    dropout_rate: float = DROPOUT_RATE,
    l2: float = 0.0,
    input_dropout: float = 0.0,
    normalize_on: np.ndarray | None = None,
    seed: int = 0,
) -> keras.Model:
    """The report's head (Fig. 2): [Normalization], Dense+ReLU, BN, Dense(``units``)+ReLU, BN, [Dropout], Dense.

    ``n_outputs > 1`` gives softmax (the multi-class CNN), ``n_outputs == 1`` a sigmoid unit (one OvA member).
    ``units`` and ``dropout`` are the two hyperparameters the report's model selection tunes; ``dropout_rate``,
    ``input_dropout`` (a Dropout on the features, before fc1; 0 = none) and ``l2`` (an L2 penalty on every
    Dense kernel) are the regularisers the report's head lacked (on real posters it memorised its training
    split). ``normalize_on``: the training features; when given, the head starts with a ``Normalization``
    layer adapted on them (``adapt_normalization``), so the registered backbone+head model standardises its
    own input. Seeded initialisers make two heads built with the same arguments identical.
    """
    if n_outputs < 1:
        raise ValueError("n_outputs must be >= 1")
    if not (0.0 <= dropout_rate < 1.0 and 0.0 <= input_dropout < 1.0) or l2 < 0.0:
        raise ValueError(
            f"need dropout rates in [0, 1) and l2 >= 0, got {dropout_rate}, {input_dropout}, {l2}"
        )
    init = keras.initializers.GlorotUniform

    def dense(n: int, name: str, offset: int, activation: str) -> keras.layers.Dense:
        penalty = keras.regularizers.L2(l2) if l2 > 0 else None
        return keras.layers.Dense(
            n,
            activation=activation,
            kernel_initializer=init(seed + offset),
            kernel_regularizer=penalty,
            name=name,
        )

    inputs = keras.Input((input_dim,), name="features")
    x = inputs
    if normalize_on is not None:
        norm = keras.layers.Normalization(axis=-1, name="normalize")
        adapt_normalization(norm, normalize_on)
        x = norm(x)
    if input_dropout > 0:
        x = keras.layers.Dropout(input_dropout, seed=seed + 4, name="input_dropout")(x)
    x = dense(first_units, "fc1", 0, "relu")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = dense(units, "fc2", 1, "relu")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    if dropout:
        x = keras.layers.Dropout(dropout_rate, seed=seed + 2, name="dropout")(x)
    outputs = dense(n_outputs, "out", 3, "sigmoid" if n_outputs == 1 else "softmax")(x)
    return keras.Model(inputs, outputs, name="head")


def build_classifier(backbone: keras.Model, head: keras.Model) -> keras.Model:
    """Frozen backbone + head as one model over raw posters: what gets registered and served.

    The backbone is called with ``training=False`` so its BatchNorm layers always use their moving statistics,
    exactly as when features are embedded once and cached; the head's weights are shared, not copied.
    """
    backbone.trainable = False
    inputs = keras.Input(backbone.input_shape[1:], name="poster")
    outputs = head(backbone(inputs, training=False))
    return keras.Model(inputs, outputs, name=f"{backbone.name}_{head.name}")


def compile_head(
    model: keras.Model,
    kind: HeadKind,
    *,
    learning_rate: float = 1e-3,
    label_smoothing: float = 0.0,
    jit_compile: bool | str = "auto",
) -> keras.Model:
    """Adam with categorical (multi-class) or binary (one-vs-all) cross-entropy; accuracy, recall, cross-entropy.

    Recall is Keras' thresholded ``Recall`` (0.5) as in the report's tables, which is why the softmax model's
    recall there (0.06) is far below its accuracy. ``label_smoothing`` softens the training targets; it and any
    L2 kernel penalty change what ``loss`` measures, so the ``cross_entropy`` metric (plain, unsmoothed,
    penalty-free; sample-weighted like the loss) is what early stopping and model selection compare.
    ``jit_compile=False`` turns XLA off: each XLA program fuses (and so rounds) differently, which bit-for-bit
    reproducibility across model shapes needs to avoid.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"need 0 <= label_smoothing < 1, got {label_smoothing}")
    units = int(model.output_shape[-1])
    if kind == "multiclass":
        if units < 2:
            raise ValueError("a multiclass head needs a softmax output with >= 2 units")
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
        accuracy = keras.metrics.CategoricalAccuracy("accuracy")
        cross_entropy = keras.metrics.CategoricalCrossentropy(CROSS_ENTROPY)
    elif kind == "binary":
        if units != 1:
            raise ValueError(f"a binary head has one sigmoid unit, this model has {units}")
        loss = keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
        accuracy = keras.metrics.BinaryAccuracy("accuracy")
        cross_entropy = keras.metrics.BinaryCrossentropy(CROSS_ENTROPY)
    else:
        raise ValueError(f"kind must be 'multiclass' or 'binary', got {kind!r}")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=loss,
        metrics=[accuracy, keras.metrics.Recall(name="recall")],
        weighted_metrics=[cross_entropy],
        jit_compile=jit_compile,
    )
    return model
