"""ModelInfo: the one object that travels with a trained model.

Training fills it, ``export`` packs it into the ``.tflite`` (as tflite-support
metadata plus an associated ``mobile_derm.json``), and ``predict`` reads it back
from the model file alone (``mobile_derm.app.model_file``). Plain data, JSON
round-trippable, no TensorFlow.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mobile_derm.errors import ConfigError
from mobile_derm.io_utils import atomic_write_text, parse_json_object, read_json_object

# 2: probabilities calibrated (``calibration``), the class-balanced decision an explicit
# step (``decision``); 1 folded a prior correction into the probabilities.
SCHEMA_VERSION = 2

# The class-balanced decision step (mobile_derm.training.logit_adjustment), as the
# metadata states it for an app: the label is the class of highest log(p) + offset.
DECISION_RULE = "argmax(log(probability) + offsets)"

if TYPE_CHECKING:  # annotations only; numpy is imported where a mask is made
    import numpy as np


@dataclass
class ModelInfo:
    name: str
    version: str
    backbone: str
    input_size: int
    mean: tuple[float, float, float]  # pixel units, model input = (pixel - mean) / std
    std: tuple[float, float, float]
    labels: list[str]
    # label -> {"display_name": str, "malignant": bool, "treatments": [str, ...]}
    taxonomy: dict[str, dict] = field(default_factory=dict)
    # operating points on the malignancy score, chosen on the validation split:
    # {"sensitive": t, "specific": t} (score >= t means "refer")
    malignancy_thresholds: dict[str, float] = field(default_factory=dict)
    # what each point was chosen for on validation: {"sensitive": {"sensitivity": 0.9}, ...}
    malignancy_targets: dict[str, dict[str, float]] = field(default_factory=dict)
    # abstain ("unknown") when the top probability is below this; chosen on validation
    ood_threshold: float | None = None
    # temperature scaling (mobile_derm.training.calibration), already folded into the
    # head, so the probabilities every copy outputs are calibrated (nothing to apply):
    # {"method": "temperature", "temperature": T, "shift": [...], "validation": {...}}
    calibration: dict | None = None
    # the class-balanced decision step that predict applies (DECISION_RULE):
    # {"rule": ..., "tau": t, "train_prior": [...], "offsets": [...]}; None: the most probable class
    decision: dict | None = None
    # feature-space abstention (mobile_derm.model.familiarity), the exported models' second
    # output: {"output": "unfamiliarity", "abstain_above": 0.5, "threshold": distance,
    # "keep_fraction": f, "n_components": k, "slope": s}; None: one output only
    familiarity: dict | None = None
    # mobile_derm.model.views: the exported models average over these views of the input
    # (inside the model, so an app feeds one image); "none" for a plain model
    test_time_views: str = "none"
    gate_config: dict | None = None  # mobile_derm_quality.GateConfig as a dict
    description: str = "Skin-disorder image classifier (decision support, not a diagnosis)."
    author: str = "mobile_derm"
    licence: str = "See the training data licences; research use only unless checked."
    schema_version: int = SCHEMA_VERSION

    def malignant_mask(self) -> "np.ndarray":
        """Boolean per label: malignancy score = probabilities @ this mask."""
        import numpy as np

        return np.array([bool(self.taxonomy.get(l, {}).get("malignant", False)) for l in self.labels])

    def treatment_masks(self) -> dict[str, "np.ndarray"]:
        """Treatment option -> boolean per label (a class may carry several)."""
        import numpy as np

        names = sorted({t for l in self.labels for t in self.taxonomy.get(l, {}).get("treatments", [])})
        return {t: np.array([t in self.taxonomy.get(l, {}).get("treatments", []) for l in self.labels]) for t in names}

    def decision_scores(self, probs: "np.ndarray") -> "np.ndarray":
        """What the decision ranks classes by (classes on the last axis): log(p) plus
        the decision step's offsets, or log(p) alone when the model has none."""
        return decision_scores(probs, None if not self.decision else self.decision["offsets"])

    def decide(self, probs: "np.ndarray") -> "np.ndarray":
        """The decided class index of each row of ``probs``."""
        return self.decision_scores(probs).argmax(axis=-1)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict, source: str | Path | None = None) -> "ModelInfo":
        known = set(cls.__dataclass_fields__)
        missing = [k for k in ("name", "version", "backbone", "input_size", "mean", "std", "labels") if k not in data]
        if missing:
            raise ConfigError(source, f"model info lacks {', '.join(missing)}")
        values = {k: v for k, v in data.items() if k in known}
        values["mean"] = tuple(float(x) for x in values["mean"])
        values["std"] = tuple(float(x) for x in values["std"])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str, source: str | Path | None = None) -> "ModelInfo":
        return cls.from_dict(parse_json_object(text, source, ConfigError, "model info"), source)

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "ModelInfo":
        return cls.from_dict(read_json_object(path, ConfigError, "model info"), path)


def decision_scores(probs: "np.ndarray", offsets=None) -> "np.ndarray":
    """log(probs) + ``offsets`` (classes on the last axis): DECISION_RULE's ranking."""
    import numpy as np

    scores = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-30, 1.0))
    return scores if offsets is None else scores + np.asarray(offsets, dtype=np.float64)
