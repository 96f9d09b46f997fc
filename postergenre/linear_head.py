"""The linear probe as a Keras head: standardisation and logistic regression as two layers, so a probe that
beats the tuned MLP head on val can itself be the registered backbone+head model (same predictions)."""

from __future__ import annotations

import keras
import numpy as np

from postergenre.probe import LinearProbe

_ABSENT_LOGIT = -30.0
"""Bias of a class the probe never saw in train: probability 0 to float32 precision, as the probe gives it."""


def linear_head(probe: LinearProbe, input_dim: int) -> keras.Model:
    """``Normalization`` (the train scaler's mean and scale) then ``Dense`` (the regression's coefficients),
    softmax over the classes or one sigmoid unit: ``head.predict(x) == probe.predict_proba(x)`` to float32."""
    scaler, model = probe.scaler, probe.model
    inputs = keras.Input((input_dim,), name="features")
    standardised = keras.layers.Normalization(
        mean=scaler.mean_.astype(np.float32), variance=(scaler.scale_**2).astype(np.float32), name="standardise"
    )(inputs)
    coef, intercept = model.coef_.astype(np.float32), model.intercept_.astype(np.float32)
    if probe.n_outputs == 1:
        kernel, bias, activation = coef.T, intercept, "sigmoid"
    else:  # one column per class, in class-index order; a class absent from train never wins
        kernel = np.zeros((input_dim, probe.n_outputs), np.float32)
        bias = np.full(probe.n_outputs, _ABSENT_LOGIT, np.float32)
        seen = model.classes_.astype(int)
        if coef.shape[0] == 1:  # scikit-learn keeps one logit z for two classes: softmax(-z/2, z/2) = sigmoid(z)
            coef, intercept = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
        kernel[:, seen], bias[seen] = coef.T, intercept
        activation = "softmax"
    dense = keras.layers.Dense(kernel.shape[1], activation=activation, name="probe")
    outputs = dense(standardised)
    dense.set_weights([kernel, bias])
    return keras.Model(inputs, outputs, name="head")
