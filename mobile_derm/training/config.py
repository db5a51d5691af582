"""Training hyperparameters as one dataclass (MediaPipe Model Maker style).

Saved as ``train_config.json`` in every run; ``mobile-derm train --config``
reads the same format, so a run can be repeated from its own folder.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from mobile_derm.errors import ConfigError
from mobile_derm.model.specs import DEFAULT_BACKBONE, BackboneSpec, get_backbone_spec
from mobile_derm.model.views import check as check_views


AUGMENTATIONS = ("phone", "light", "none")  # mobile_derm.training.pipeline: augment, light_augment, nothing
OVERSAMPLING = ("none", "sqrt")
LOGIT_ADJUSTMENT_CHOICES = ("validation", "per_class")  # or a number: tau itself
MAX_ENSEMBLE_MEMBERS = 5  # each member costs a training run and a forward pass in the app


@dataclass
class TrainConfig:
    backbone: str = DEFAULT_BACKBONE
    input_size: int | None = None  # None: the backbone's native size
    weights: str | None = "imagenet"  # "imagenet", None (random) or a weights file
    allow_random_weights: bool = False  # fall back to random init if the weights extra is missing
    batch_size: int = 32
    # Stage 1: a softmax head on cached backbone features (seconds, even on 2 cores).
    head_epochs: int = 40
    head_learning_rate: float = 1e-3
    # Stage 2: end-to-end fine-tuning with augmentation; 0 epochs skips it.
    finetune_epochs: int = 10
    finetune_learning_rate: float = 5e-4
    warmup_epochs: float = 0.5
    weight_decay: float = 1e-5
    # False keeps BatchNorm in inference mode while fine-tuning (Keras' advice
    # for small data: batch statistics of a few hundred photos are noisy).
    train_batchnorm: bool = False
    # Keep the stem and the first N backbone blocks frozen while fine-tuning (0: train
    # all). The low blocks run at the highest resolutions, so on a CPU they cost most
    # of the backward pass and hold generic edge/colour filters; freezing Lite0's first
    # 5 of 16 blocks made a 192 px HAM10000 epoch about 1.5x faster (README).
    frozen_blocks: int = 0
    label_smoothing: float = 0.1
    class_weighting: str = "sqrt"  # "none", "sqrt" or "balanced" inverse frequency
    # "sqrt" draws an image of class c 1/sqrt(n_c) times as often as plain shuffling
    # (rare classes seen more often, in fresh augmentations); together with sqrt
    # class weights the objective is class-balanced without 50x loss weights.
    oversampling: str = "none"
    # "phone": zoom, tilt, flips, light, blur, JPEG (phone capture); "light": flips and
    # light only (fixed-optics dermoscopy); "none". True/False mean "phone"/"none".
    augment: str | bool = "phone"
    early_stopping_patience: int = 3
    # Post-hoc logit adjustment towards rare classes (mobile_derm.training.logit_adjustment):
    # "validation" picks tau for balanced accuracy on the validation split, a
    # number fixes tau, 0 leaves the trained model as it is; "per_class" refines the
    # validation tau with one offset per class where that holds on held-out validation.
    logit_adjustment: float | str = 0.0
    # Logit-adjusted loss (Menon et al. 2021, eq. 10): training adds tau * log(prior)
    # to the logits inside the loss, so the model learns the class-balanced scores
    # directly instead of through loss weights; 0 is plain cross-entropy.
    loss_logit_adjustment: float = 0.0
    # Average the prediction over flipped/turned copies of the photo (mobile_derm.model.views):
    # "none", "hflip" (2 views), "flips" (4), "dihedral" (8). Evaluation, the choices made
    # on validation and the exported models all use them; each view costs a forward pass.
    test_time_views: str = "none"
    # Several models averaged, each trained on the training part plus all but one share of
    # the validation part and validated on that share (cross-fitted: every validation photo
    # is scored by the member that never trained on it, so tau and the thresholds are still
    # chosen on unseen photos). More training photos and an ensemble, for small data sets;
    # the app pays one forward pass per member (and view). 1: a single model.
    ensemble_members: int = 1
    dropout_rate: float | None = None  # None: the backbone spec's
    seed: int = 0
    split_fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)
    # Operating points chosen on the validation split.
    min_sensitivity: float = 0.90
    min_specificity: float = 0.90
    # Abstain when the top probability is below the value that keeps this
    # fraction of validation images.
    ood_keep_fraction: float = 0.95
    # Images per calibration set for integer quantization.
    representative_size: int = 200

    def __post_init__(self):
        get_backbone_spec(self.backbone)  # fail early on a typo
        if self.class_weighting not in ("none", "sqrt", "balanced"):
            raise ConfigError(None, f"class_weighting must be none, sqrt or balanced, not {self.class_weighting!r}")
        if self.oversampling not in OVERSAMPLING:
            raise ConfigError(None, f"oversampling must be one of {', '.join(OVERSAMPLING)}, not {self.oversampling!r}")
        if isinstance(self.augment, bool):  # the older on/off form, as saved in earlier runs
            self.augment = "phone" if self.augment else "none"
        if self.augment not in AUGMENTATIONS:
            raise ConfigError(None, f"augment must be one of {', '.join(AUGMENTATIONS)}, not {self.augment!r}")
        if isinstance(self.logit_adjustment, str):
            if self.logit_adjustment not in LOGIT_ADJUSTMENT_CHOICES:
                raise ConfigError(None, f"logit_adjustment must be a number, \"validation\" or \"per_class\", not {self.logit_adjustment!r}")
        elif not 0.0 <= float(self.logit_adjustment) <= 3.0:
            raise ConfigError(None, "logit_adjustment tau must lie in [0, 3]")
        check_views(self.test_time_views)
        if isinstance(self.loss_logit_adjustment, bool) or not isinstance(self.loss_logit_adjustment, (int, float)) \
                or not 0.0 <= self.loss_logit_adjustment <= 3.0:
            raise ConfigError(None, f"loss_logit_adjustment must be a number in [0, 3], not {self.loss_logit_adjustment!r}")
        if not isinstance(self.ensemble_members, int) or isinstance(self.ensemble_members, bool) \
                or not 1 <= self.ensemble_members <= MAX_ENSEMBLE_MEMBERS:
            raise ConfigError(None, f"ensemble_members must be a whole number from 1 to {MAX_ENSEMBLE_MEMBERS}, "
                                    f"not {self.ensemble_members!r}")
        if not isinstance(self.frozen_blocks, int) or isinstance(self.frozen_blocks, bool) or self.frozen_blocks < 0:
            raise ConfigError(None, f"frozen_blocks must be a whole number >= 0, not {self.frozen_blocks!r}")
        self.split_fractions = tuple(float(f) for f in self.split_fractions)
        if len(self.split_fractions) != 3 or abs(sum(self.split_fractions) - 1.0) > 1e-6:
            raise ConfigError(None, "split_fractions must be three numbers that sum to 1")

    @property
    def spec(self) -> BackboneSpec:
        return get_backbone_spec(self.backbone)

    @property
    def image_size(self) -> int:
        return int(self.input_size or self.spec.input_size)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        from mobile_derm.io_utils import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_dict(cls, data: dict, source=None) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(source, f"unknown option(s) {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(source, str(exc)) from None

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(path, "config file not found")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(path, f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict):
            raise ConfigError(path, "config must be a JSON object")
        return cls.from_dict(data, path)
