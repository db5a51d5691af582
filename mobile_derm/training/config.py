"""Training hyperparameters as one dataclass (MediaPipe Model Maker style).

Saved as ``train_config.json`` in every run; ``mobile-derm train --config``
reads the same format, so a run can be repeated from its own folder. The
fields are grouped by concern below, but the dataclass and its JSON stay flat
(one level of keys): a recipe is a short file a person edits by hand.

The defaults are a shipped recipe, ``mobile_derm/data/train_ham10000.json``
(``DEFAULT_RECIPE``: the HAM10000 model behind the export, benchmark and
MediaPipe figures), so ``TrainConfig()`` is a configuration that was measured;
every recipe file lists all of its values. What each option does and the
measurement that keeps it, and the options retired for not paying:
docs/options.md.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from mobile_derm.errors import ConfigError
from mobile_derm.io_utils import atomic_write_text, read_json_object
from mobile_derm.model.specs import DEFAULT_BACKBONE, BackboneSpec, get_backbone_spec
from mobile_derm.model.views import check as check_views


DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "data" / "train_ham10000.json"
CLASS_WEIGHTINGS = ("none", "balanced")  # "balanced": inverse class frequency
LOGIT_ADJUSTMENT_CHOICES = ("validation",)  # or a number: tau itself
MAX_ENSEMBLE_MEMBERS = 5  # each member costs a training run and a forward pass in the app
MIN_INPUT_SIZE = 32

# Options retired because no recipe used them and no measurement showed they pay
# (docs/options.md, "Retired"), with the values that mean what the code does now.
# An older run's train_config.json still holds them: a neutral value is dropped on
# loading; any other value is refused, since this code cannot repeat that run.
RETIRED_OPTIONS = {"frozen_blocks": (0,), "oversampling": ("none",), "augment": ("phone", True),
                   "dropout_rate": (None,),  # dropout before the head: always the backbone spec's
                   "low_light_probability": (0.0, 0)}  # no low-light step in the augmentation chain
# Retired values of options that stay (refused the same way).
RETIRED_VALUES = {"class_weighting": ("sqrt",), "logit_adjustment": ("per_class",)}
RETIRED_NOTE = "retired: see docs/options.md; a run that used it cannot be repeated by this version"


def _same(value, neutral) -> bool:
    """Equal and of the same type (so that True is not taken for 1, nor 0 for False)."""
    return type(value) is type(neutral) and value == neutral


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class TrainConfig:
    # ---- model
    backbone: str = DEFAULT_BACKBONE
    # Pixels per side of the square model input; None in a file means the backbone's
    # native size, resolved to a number when the config is made.
    input_size: int | None = 160
    weights: str | None = "imagenet"  # "imagenet" or None (random initialisation)
    allow_random_weights: bool = False  # fall back to random init if the weights extra is missing
    # Several models averaged, each trained on the same split with its own seed (member k:
    # seed + k); none sees the validation part, so calibration, tau and the thresholds are
    # chosen on the shipped average itself. For small data sets, where two fine-tunings place
    # the rare classes' boundaries differently; the app pays one forward pass per member
    # (and view). 1: a single model.
    ensemble_members: int = 1

    # ---- head stage: a softmax head on cached backbone features (seconds, even on 2 cores)
    head_epochs: int = 40
    head_learning_rate: float = 1e-3

    # ---- fine-tuning: end to end, with phone-capture augmentation; 0 epochs skips it
    finetune_epochs: int = 14
    finetune_learning_rate: float = 1e-3
    batch_size: int = 32
    warmup_epochs: float = 0.5
    weight_decay: float = 1e-5
    # False keeps BatchNorm in inference mode while fine-tuning (Keras' advice for
    # small data: batch statistics of a few hundred photos are noisy).
    train_batchnorm: bool = True
    label_smoothing: float = 0.1  # both stages
    early_stopping_patience: int = 14

    # ---- class balance
    class_weighting: str = "none"  # loss weights: "none" or "balanced" (inverse class frequency)
    # Logit-adjusted loss (Menon et al. 2021, eq. 10): training adds tau * log(prior)
    # to the logits inside the loss, so the model learns the class-balanced scores
    # directly instead of through loss weights; 0 is plain cross-entropy.
    loss_logit_adjustment: float = 0.0

    # ---- prediction and decision
    # The class-balanced decision step (mobile_derm.training.logit_adjustment): the label is
    # argmax(log p - tau * log prior) over the calibrated probabilities, recorded in the
    # metadata and applied by predict. "validation" picks tau for balanced accuracy on the
    # validation split, a number fixes tau, 0 names the most probable class.
    logit_adjustment: float | str = 0.0
    # Average the prediction over flipped/turned copies of the photo (mobile_derm.model.views):
    # "none", "hflip" (2 views), "flips" (4), "dihedral" (8). Evaluation, the choices made
    # on validation and the exported models all use them; each view costs a forward pass.
    test_time_views: str = "none"
    # Malignancy operating points chosen on the validation split.
    min_sensitivity: float = 0.90
    min_specificity: float = 0.90
    # Abstain when the top probability (or the feature-space distance) is beyond the
    # value that keeps this fraction of validation images.
    ood_keep_fraction: float = 0.95

    # ---- data split (grouped by lesion/patient, stratified by class)
    seed: int = 0
    split_fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)

    # ---- export
    representative_size: int = 200  # training images in the integer models' calibration set

    def __post_init__(self):
        spec = get_backbone_spec(self.backbone)  # fail early on a typo
        if self.input_size is None:
            self.input_size = spec.input_size
        if not _whole(self.input_size) or self.input_size < MIN_INPUT_SIZE:
            raise ConfigError(None, f"input_size must be a whole number of pixels >= {MIN_INPUT_SIZE} "
                                    f"(or null: the backbone's {spec.input_size}), not {self.input_size!r}")
        if self.weights not in ("imagenet", None):
            raise ConfigError(None, f"weights must be \"imagenet\" or null (random), not {self.weights!r} "
                                    f"(starting from another run's weights file was {RETIRED_NOTE})")
        for name, retired in RETIRED_VALUES.items():
            value = getattr(self, name)
            if any(_same(value, r) for r in retired):
                raise ConfigError(None, f"{name} {value!r} was {RETIRED_NOTE}")
        if self.class_weighting not in CLASS_WEIGHTINGS:
            raise ConfigError(None, f"class_weighting must be one of {', '.join(CLASS_WEIGHTINGS)}, "
                                    f"not {self.class_weighting!r}")
        if isinstance(self.logit_adjustment, str):
            if self.logit_adjustment not in LOGIT_ADJUSTMENT_CHOICES:
                raise ConfigError(None, f"logit_adjustment must be a number or \"validation\", not {self.logit_adjustment!r}")
        elif not 0.0 <= float(self.logit_adjustment) <= 3.0:
            raise ConfigError(None, "logit_adjustment tau must lie in [0, 3]")
        check_views(self.test_time_views)
        if isinstance(self.loss_logit_adjustment, bool) or not isinstance(self.loss_logit_adjustment, (int, float)) \
                or not 0.0 <= self.loss_logit_adjustment <= 3.0:
            raise ConfigError(None, f"loss_logit_adjustment must be a number in [0, 3], not {self.loss_logit_adjustment!r}")
        if not _whole(self.ensemble_members) or not 1 <= self.ensemble_members <= MAX_ENSEMBLE_MEMBERS:
            raise ConfigError(None, f"ensemble_members must be a whole number from 1 to {MAX_ENSEMBLE_MEMBERS}, "
                                    f"not {self.ensemble_members!r}")
        self.split_fractions = tuple(float(f) for f in self.split_fractions)
        if len(self.split_fractions) != 3 or abs(sum(self.split_fractions) - 1.0) > 1e-6:
            raise ConfigError(None, "split_fractions must be three numbers that sum to 1")

    @property
    def spec(self) -> BackboneSpec:
        return get_backbone_spec(self.backbone)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_dict(cls, data: dict, source=None) -> "TrainConfig":
        data = dict(data)
        for name, neutral in RETIRED_OPTIONS.items():
            if name in data:
                value = data.pop(name)
                if not any(_same(value, n) for n in neutral):
                    raise ConfigError(source, f"option {name} = {json.dumps(value)} was {RETIRED_NOTE}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(source, f"unknown option(s) {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(source, str(exc)) from None
        except ConfigError as exc:
            if exc.path is not None or source is None:
                raise
            raise ConfigError(source, exc.problem) from None

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(read_json_object(path, ConfigError, "training config"), path)
