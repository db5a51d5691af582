"""Test-time views: average a model's predictions over flipped and turned copies of a photo.

A skin lesion has no up or down, so a photo mirrored or turned by a quarter is an
equally valid picture of it, and the model (trained with flips and turns as
augmentation) should give the same answer. It does not quite: averaging the
probabilities over such copies cancels part of that orientation noise. On the
HAM10000 test split this bought 1-3 points of balanced accuracy (README).

The views are part of the model, not of the app: ``TrainConfig.test_time_views``
names them, training evaluates with them (so the logit adjustment and the
malignancy thresholds are chosen on what the app will see), ``ModelInfo`` records
them, and the export wraps the classifier so each ``.tflite`` runs all views in
one batch and returns the average probabilities (``with_view_averaging``). An app
feeds one image, as before; it pays one forward pass per view. The unfamiliarity score
stays that of the photo as given, as its threshold was chosen.

Each view is exact on a square input (flips and transposes move pixels, nothing is
resampled), and every view of a view is a view: the set is a group, so the average
does not depend on how the photo was held.
"""
from __future__ import annotations

import numpy as np

from mobile_derm.errors import ConfigError

# A view is (transpose, flip rows, flip columns), applied in that order to (H, W) of NHWC.
_IDENTITY = (False, False, False)
VIEW_SETS: dict[str, tuple[tuple[bool, bool, bool], ...]] = {
    "none": (_IDENTITY,),
    "hflip": (_IDENTITY, (False, False, True)),
    # the four mirror images: horizontal, vertical and both (= a half turn)
    "flips": (_IDENTITY, (False, False, True), (False, True, False), (False, True, True)),
    # all eight symmetries of the square: the flips, and the flips of the transpose
    # (which include the quarter turns)
    "dihedral": tuple((t, r, c) for t in (False, True) for r in (False, True) for c in (False, True)),
}


def check(name: str) -> tuple[tuple[bool, bool, bool], ...]:
    """The views of a named set, or a ConfigError naming the choices."""
    if name not in VIEW_SETS:
        raise ConfigError(None, f"test_time_views must be one of {', '.join(VIEW_SETS)}, not {name!r}")
    return VIEW_SETS[name]


def view_of(images: np.ndarray, view: tuple[bool, bool, bool]) -> np.ndarray:
    """One view of a batch of NHWC images (numpy)."""
    transpose, flip_rows, flip_cols = view
    x = images.transpose(0, 2, 1, 3) if transpose else images
    if flip_rows:
        x = x[:, ::-1]
    if flip_cols:
        x = x[:, :, ::-1]
    return np.ascontiguousarray(x)


def view_probs(predict, images: np.ndarray, name: str, as_given: np.ndarray | None = None) -> np.ndarray:
    """``predict`` (images -> probabilities) on every view: shape (views, N, classes).
    Row 0 is the photo as given; pass ``as_given`` when those are already computed."""
    first, *rest = check(name)
    given = predict(view_of(images, first)) if as_given is None else np.asarray(as_given)
    return np.stack([given, *(predict(view_of(images, v)) for v in rest)])


def with_view_averaging(model, name: str):
    """A Keras model with ``model``'s input and outputs: the first output (the label
    probabilities) is the mean over the views of ``name``, any further output (the
    unfamiliarity score, whose threshold was set on photos as given) is that of the photo
    as given. All views go through ``model`` as one batch. With "none" the model itself
    is returned."""
    views = check(name)
    if len(views) == 1:
        return model
    from mobile_derm.tf_setup import keras, tf

    height, width = model.input_shape[1:3]
    if any(v[0] for v in views) and height != width:
        raise ConfigError(None, f"test_time_views {name!r} turns the image, which needs a square input, not {height}x{width}")

    def stack(x):
        out = []
        for transpose, flip_rows, flip_cols in views:
            y = tf.transpose(x, [0, 2, 1, 3]) if transpose else x
            axes = [a for a, flip in ((1, flip_rows), (2, flip_cols)) if flip]
            out.append(tf.reverse(y, axes) if axes else y)
        return tf.concat(out, axis=0)

    def by_view(t):
        return tf.reshape(t, [len(views), -1, *t.shape[1:]])

    inputs = keras.Input(model.input_shape[1:], name=model.input_names[0])
    outputs = model(keras.layers.Lambda(stack, name="test_time_views")(inputs))
    single = not isinstance(outputs, (list, tuple))
    outputs = [outputs] if single else list(outputs)
    combined = [keras.layers.Lambda(lambda t: tf.reduce_mean(by_view(t), axis=0), name="view_mean")(outputs[0])]
    combined += [keras.layers.Lambda(lambda t: by_view(t)[0], name=f"as_given_{i}")(o) for i, o in enumerate(outputs[1:], 1)]
    return keras.Model(inputs, combined[0] if single else combined, name=f"{model.name}_{name}_views")
