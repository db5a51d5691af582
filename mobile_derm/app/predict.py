"""The app's view of a model: LiteRT and the .tflite file, nothing else.

No TensorFlow import anywhere on this path: labels, normalization, taxonomy,
thresholds and the quality-gate config all come from the model file's own
metadata (``mobile_derm.app.model_file.read_model_info`` reads it with ``zipfile``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mobile_derm.errors import ConfigError, ModelFileError
from mobile_derm.app.model_info import ModelInfo
from mobile_derm.app.preprocess import load_photo, normalize, resize_square


class LiteRTModel:
    """One ``.tflite`` on the LiteRT interpreter, knowing nothing of our metadata:
    photo in (square crop, resize to the input tensor's size, ``(pixel - mean) / std``,
    then quantized with the tensor's own scale and zero point for integer inputs),
    dequantized outputs out. ``Predictor`` adds the metadata; the benchmark also runs
    models brought from elsewhere through it."""

    def __init__(self, model_path: str | Path, mean, std, num_threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        from mobile_derm_quality.quiet import native_output_silenced

        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelFileError(self.model_path, "model file not found")
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ConfigError(None, f"num_threads must be a whole number >= 1, not {num_threads!r}")
        self.mean, self.std = mean, std
        try:
            with native_output_silenced():  # LiteRT announces its XNNPACK delegate on stderr
                self.interpreter = Interpreter(model_path=str(self.model_path), num_threads=num_threads)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelFileError(self.model_path, f"LiteRT cannot load it ({str(exc).splitlines()[0]})") from None
        self.input_detail = self.interpreter.get_input_details()[0]
        self.output_details = self.interpreter.get_output_details()
        shape = tuple(int(n) for n in self.input_detail["shape"])
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3:
            raise ModelFileError(self.model_path, f"input shape {shape} is not one square RGB image (1, n, n, 3)")
        self.input_size = shape[1]

    @property
    def float_input(self) -> bool:
        return np.dtype(self.input_detail["dtype"]) == np.float32

    def input_tensor(self, rgb: np.ndarray) -> np.ndarray:
        """Square crop, resize, normalize, then quantize for integer inputs
        using the tensor's own scale and zero point."""
        pixels = resize_square(rgb, self.input_size)
        x = normalize(pixels, self.mean, self.std)
        dtype = self.input_detail["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zero = self.input_detail["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        return x[None].astype(dtype)

    def run(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Every output for one photo, dequantized to float32, batch axis dropped."""
        self.interpreter.set_tensor(self.input_detail["index"], self.input_tensor(rgb))
        self.interpreter.invoke()
        return [self._read(detail) for detail in self.output_details]

    def _read(self, detail: dict) -> np.ndarray:
        out = self.interpreter.get_tensor(detail["index"])[0]
        if np.issubdtype(out.dtype, np.integer):
            scale, zero = detail["quantization"]
            out = (out.astype(np.float32) - zero) * scale
        return out.astype(np.float32)


@dataclass
class Prediction:
    """What ``Predictor.predict`` returns and ``mobile-derm predict`` prints (``to_dict()``).

    ``classified`` is False when the quality gate rejected the photo: then only
    ``quality`` is filled. Otherwise ``top_k`` holds {"label", "display_name",
    "probability"} dicts, best first by the model's decision rule, and ``abstained`` says the classifier declines
    to name a class (``prediction`` is then "unknown"; ``abstain_reasons`` says why).
    """

    image: str | None
    classified: bool
    quality: dict | None = None  # the gate's verdict, when the gate ran
    prediction: str | None = None
    abstained: bool = False
    abstain_reasons: list[str] = field(default_factory=list)
    top_k: list[dict] = field(default_factory=list)
    malignancy: dict | None = None
    treatment_scores: dict = field(default_factory=dict)
    unfamiliarity: float | None = None  # only from models that carry the score

    def to_dict(self) -> dict:
        out: dict = {} if self.image is None else {"image": self.image}
        if self.quality is not None:
            out["quality"] = self.quality
        out["classified"] = self.classified
        if self.classified:
            out.update(prediction=self.prediction, abstained=self.abstained, abstain_reasons=self.abstain_reasons,
                       top_k=self.top_k, malignancy=self.malignancy, treatment_scores=self.treatment_scores)
            if self.unfamiliarity is not None:
                out["unfamiliarity"] = self.unfamiliarity
        return out


class Predictor:
    """Classify photos with one of our .tflite models on the LiteRT interpreter.

    >>> result = Predictor("runs/demo/int8.tflite").predict("photo.jpg")  # doctest: +SKIP
    >>> result.top_k[0]["label"], result.abstained  # doctest: +SKIP
    ('demo_nevus_like', False)
    """

    def __init__(self, model_path: str | Path, num_threads: int = 1):
        from mobile_derm.app.model_file import read_model_info

        self.model_path = Path(model_path)
        self.info: ModelInfo = read_model_info(self.model_path)  # validates the file first
        self.model = LiteRTModel(self.model_path, self.info.mean, self.info.std, num_threads)
        if self.model.input_size != self.info.input_size:
            raise ModelFileError(self.model_path, f"input shape {tuple(self.model.input_detail['shape'])} disagrees "
                                                  f"with metadata size {self.info.input_size}")
        # the unfamiliarity score (mobile_derm.model.familiarity), when the model carries one
        self._has_unfamiliarity = len(self.model.output_details) > 1 and bool(self.info.familiarity)

    def gate_twin(self):
        """The gate's TFLite twin the model's metadata points to (export writes it beside the
        model), loaded once; refused if missing or built from another gate config."""
        if getattr(self, "_gate_twin", None) is None:
            from mobile_derm_quality import GateConfig
            from mobile_derm_quality.gate_twin import CONFIG_POINTER_KEY, GateTwin

            gate = dict(self.info.gate_config or {})
            name = gate.pop(CONFIG_POINTER_KEY, None)
            if not name:
                raise ModelFileError(self.model_path, "its metadata names no gate.tflite (export it again, or gate "
                                                      "with the opencv engine)")
            twin = GateTwin(self.model_path.parent / name)
            if twin.config.to_dict() != GateConfig.from_dict(gate).to_dict():
                raise ModelFileError(twin.path, "built from another gate config than the one packed in the model")
            self._gate_twin = twin
        return self._gate_twin

    def scores(self, rgb: np.ndarray) -> tuple[np.ndarray, float | None]:
        """Label probabilities and the unfamiliarity score (None if the model has none)."""
        outputs = self.model.run(rgb)
        return outputs[0], (float(outputs[1][0]) if self._has_unfamiliarity else None)

    def predict_probs(self, rgb: np.ndarray) -> np.ndarray:
        return self.scores(rgb)[0]

    def explain(self, probs: np.ndarray, top_k: int = 3, unfamiliarity: float | None = None) -> dict:
        """Decision-support output: top-k, malignancy with both operating
        points, treatment-option scores, and abstention: on a low top probability
        (``low_confidence``) or on a photo unlike the training photos (``unfamiliar``)."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ConfigError(None, f"top_k must be a whole number >= 1, not {top_k!r}")
        info = self.info
        # best first by the model's decision rule (its class-balanced step, if it has one:
        # ModelInfo.decision), so top_k[0] is the decision; the probabilities are calibrated
        order = np.argsort(-info.decision_scores(probs), kind="stable")[:top_k]  # all labels when top_k is larger
        top = [
            {
                "label": info.labels[i],
                "display_name": info.taxonomy.get(info.labels[i], {}).get("display_name", info.labels[i]),
                "probability": round(float(probs[i]), 4),
            }
            for i in order
        ]
        malignancy = float(probs @ info.malignant_mask().astype(np.float32))
        verdicts = {
            name: {"threshold": round(t, 4), "refer": bool(malignancy >= t)}
            for name, t in info.malignancy_thresholds.items()
        }
        treatments = {name: round(float(probs @ mask.astype(np.float32)), 4) for name, mask in info.treatment_masks().items()}
        reasons = []
        if info.ood_threshold is not None and float(probs.max()) < info.ood_threshold:
            reasons.append("low_confidence")
        if unfamiliarity is not None and unfamiliarity > info.familiarity["abstain_above"]:
            reasons.append("unfamiliar")
        result = {
            "prediction": "unknown" if reasons else top[0]["label"],
            "abstained": bool(reasons),
            "abstain_reasons": reasons,
            "top_k": top,
            "malignancy": {"score": round(malignancy, 4), "operating_points": verdicts},
            "treatment_scores": treatments,
        }
        if unfamiliarity is not None:
            result["unfamiliarity"] = round(unfamiliarity, 4)
        return result

    def predict(self, photo: str | Path | np.ndarray, top_k: int = 3, gate: bool = True, force: bool = False,
                gate_engine: str = "opencv") -> Prediction:
        """Classify one photo (a file, or an RGB uint8 array): run the quality gate from
        the model's metadata, and classify unless the gate rejects it (``force`` overrides).
        ``gate_engine``: "opencv" (the reference) or "tflite" (gate.tflite beside the model, on LiteRT)."""
        image = None if isinstance(photo, np.ndarray) else str(photo)
        decoded = None if image is None else load_photo(photo)
        rgb = photo if decoded is None else decoded.rgb
        quality = None
        if gate:
            from mobile_derm_quality import GateConfig, assess, assess_photo

            # a skin-check model named in the packed config lies beside the model file (export copies it)
            config = (GateConfig.from_dict(self.info.gate_config).resolve_paths(self.model_path.parent)
                      if self.info.gate_config else None)
            if gate_engine == "tflite":
                twin = self.gate_twin()
                verdict = (twin.assess(rgb, min_model_input=self.info.input_size) if decoded is None else
                           twin.assess_photo(decoded, min_model_input=self.info.input_size, path=image))
            else:
                verdict = (assess(rgb, config, min_model_input=self.info.input_size) if decoded is None else
                           assess_photo(decoded, config, min_model_input=self.info.input_size, path=image))
            quality = verdict.to_dict()
            if verdict.decision == "reject" and not force:
                return Prediction(image, classified=False, quality=quality)
        probs, unfamiliarity = self.scores(rgb)
        return Prediction(image, classified=True, quality=quality, **self.explain(probs, top_k, unfamiliarity))
