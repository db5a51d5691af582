"""The classifier as one flat Keras model: backbone + dropout + softmax head, an
ensemble of such models averaged, and the inference helpers every later stage uses
(features, probabilities, test-time views).

Layer names are part of the contract: ``head_dropout``'s input is the pooled feature
vector the unfamiliarity score reads, and ``head`` is the softmax layer the prior
correction is folded into.
"""
from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: the model package does not depend on training
    from mobile_derm.training.config import TrainConfig


def freeze_batchnorm(model) -> list:
    """Make every BatchNormalization layer of ``model`` non-trainable (tf_keras then
    also runs it in inference mode); returns the layers it changed, to undo it."""
    from mobile_derm.tf_setup import keras

    changed = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    for layer in changed:
        layer.trainable = False
    return changed


def build_classifier(config: TrainConfig, n_classes: int, weights: str | None = None):
    """Backbone + dropout + softmax, as one flat functional model (tfmot's
    quantize_model refuses nested models); with ``config.ensemble_members`` > 1, that
    many of them averaged (``ensemble_classifier``)."""
    from mobile_derm.model.backbones import build_backbone
    from mobile_derm.tf_setup import keras

    if config.ensemble_members > 1:
        single = dataclasses.replace(config, ensemble_members=1)
        return ensemble_classifier([build_classifier(single, n_classes, weights) for _ in range(config.ensemble_members)])
    spec = config.spec
    backbone = build_backbone(
        spec, config.input_size, weights=config.weights if weights is None else weights,
        allow_random=config.allow_random_weights,
    )
    x = keras.layers.Dropout(spec.dropout_rate, name="head_dropout")(backbone.output)
    # float32 even under a mixed-precision policy: a float16 softmax loses the small probabilities
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="head", dtype="float32")(x)
    return keras.Model(backbone.input, outputs, name=f"{spec.name}_classifier")


MEMBER_PREFIX = "member{}_"  # layer names of ensemble member k > 0; member 0 keeps the plain names


def ensemble_classifier(members: list):
    """One flat Keras model whose output is the mean of the ``members``' probabilities
    (same backbone and input). Member 0 keeps its layer names ("head", "head_dropout", ...),
    so the unfamiliarity score reads member 0's features; member k's layers are renamed
    ``member{k}_...`` so the graph stays flat (one name per layer) for export."""
    from mobile_derm.tf_setup import keras

    first, *rest = members
    outputs = [first.output]
    for k, member in enumerate(rest, 1):
        prefix = MEMBER_PREFIX.format(k)
        clone = keras.models.clone_model(
            member, input_tensors=first.input,
            clone_function=lambda layer, prefix=prefix: layer.__class__.from_config({**layer.get_config(), "name": prefix + layer.name}))
        clone.set_weights(member.get_weights())
        outputs.append(clone.output)
    mean = keras.layers.Average(name="member_mean")(outputs)
    return keras.Model(first.input, mean, name=f"{first.name}_x{len(members)}")


def fold_into_heads(model, shift: np.ndarray, temperature: float = 1.0) -> None:
    """Make the softmax layer of the model, or of every ensemble member ("head",
    "member1_head", ...), output softmax((W x + b) / T + shift), in place: kernel / T and
    bias / T + shift, one Dense layer as before. The members' outputs and the test-time
    views are averaged after it (mobile_derm.training.calibration)."""
    head = re.compile(f"({MEMBER_PREFIX.format(r'[0-9]+')})?head")
    for layer in model.layers:
        if head.fullmatch(layer.name):
            kernel, bias = layer.get_weights()
            layer.set_weights([(kernel / temperature).astype(kernel.dtype),
                               (bias / temperature + np.asarray(shift, dtype=bias.dtype)).astype(bias.dtype)])


def feature_extractor(model):
    """The classifier up to its pooled backbone features (the head's input)."""
    from mobile_derm.tf_setup import keras

    return keras.Model(model.input, model.get_layer("head_dropout").input)


def features_and_probs(model, pixels: np.ndarray, mean, std) -> tuple[np.ndarray, np.ndarray]:
    """Pooled backbone features and label probabilities from one pass over ``pixels``."""
    from mobile_derm.tf_setup import keras

    both = keras.Model(model.input, [feature_extractor(model).output, model.output])
    features, probs = predict_probs(both, pixels, mean, std)
    return features, probs


def view_stack(model, pixels: np.ndarray, mean, std, views_name: str, as_given: np.ndarray | None = None) -> np.ndarray:
    """(views, N, classes): the model's probabilities on each test-time view of ``pixels``
    (row 0: the photos as given, or ``as_given`` if already computed)."""
    from mobile_derm.model import views

    return views.view_probs(lambda x: predict_probs(model, x, mean, std), pixels, views_name, as_given)


def view_averaged_probs(model, pixels: np.ndarray, mean, std, views_name: str, as_given: np.ndarray | None = None) -> np.ndarray:
    """What the exported model returns: probabilities averaged over the run's test-time views."""
    return view_stack(model, pixels, mean, std, views_name, as_given).mean(axis=0)


def predict_probs(model, pixels: np.ndarray, mean, std, batch_size: int = 64) -> np.ndarray:
    from mobile_derm.training.pipeline import make_dataset

    return model.predict(make_dataset(pixels, None, mean, std, batch_size, training=False), verbose=0)
