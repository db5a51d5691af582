"""The app's view of a model: LiteRT and the .tflite file, nothing else.

No TensorFlow import anywhere on this path: labels, normalization, taxonomy,
thresholds and the quality-gate config all come from the model file's own
metadata (``mobile_derm_export.metadata.read_model_info`` reads it with ``zipfile``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mobile_derm.errors import ModelFileError
from mobile_derm.app.model_info import ModelInfo
from mobile_derm.app.preprocess import load_rgb, normalize, resize_square


class Predictor:
    """Classify RGB photos with one .tflite model on the LiteRT interpreter."""

    def __init__(self, model_path: str | Path, num_threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        from mobile_derm_export.metadata import read_model_info

        self.model_path = Path(model_path)
        self.info: ModelInfo = read_model_info(self.model_path)  # validates the file first
        try:
            self.interpreter = Interpreter(model_path=str(self.model_path), num_threads=num_threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelFileError(self.model_path, f"LiteRT cannot load it ({str(exc).splitlines()[0]})") from None
        self._input = self.interpreter.get_input_details()[0]
        outputs = self.interpreter.get_output_details()
        self._output = outputs[0]
        # the unfamiliarity score (mobile_derm.model.familiarity), when the model carries one
        self._unfamiliarity = outputs[1] if len(outputs) > 1 and self.info.familiarity else None
        shape = tuple(self._input["shape"])
        if shape[1:3] != (self.info.input_size, self.info.input_size):
            raise ModelFileError(self.model_path, f"input shape {shape} disagrees with metadata size {self.info.input_size}")

    def input_tensor(self, rgb: np.ndarray) -> np.ndarray:
        """Square crop, resize, normalize as the metadata says, then quantize
        for integer inputs using the tensor's own scale and zero point."""
        pixels = resize_square(rgb, self.info.input_size)
        x = normalize(pixels, self.info.mean, self.info.std)
        dtype = self._input["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zero = self._input["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        return x[None].astype(dtype)

    def _read(self, detail: dict) -> np.ndarray:
        out = self.interpreter.get_tensor(detail["index"])[0]
        if np.issubdtype(out.dtype, np.integer):
            scale, zero = detail["quantization"]
            out = (out.astype(np.float32) - zero) * scale
        return out.astype(np.float32)

    def predict(self, rgb: np.ndarray) -> tuple[np.ndarray, float | None]:
        """Label probabilities and the unfamiliarity score (None if the model has none)."""
        self.interpreter.set_tensor(self._input["index"], self.input_tensor(rgb))
        self.interpreter.invoke()
        unfamiliarity = float(self._read(self._unfamiliarity)[0]) if self._unfamiliarity is not None else None
        return self._read(self._output), unfamiliarity

    def predict_probs(self, rgb: np.ndarray) -> np.ndarray:
        return self.predict(rgb)[0]

    def explain(self, probs: np.ndarray, top_k: int = 3, unfamiliarity: float | None = None) -> dict:
        """Decision-support output: top-k, malignancy with both operating
        points, treatment-option scores, and abstention: on a low top probability
        (``low_confidence``) or on a photo unlike the training photos (``unfamiliar``)."""
        info = self.info
        order = np.argsort(-probs)[:top_k]
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

    def predict_file(self, path: str | Path, top_k: int = 3, gate: bool = True, force: bool = False) -> dict:
        """Read a photo, run the quality gate from the model's metadata, and
        classify it unless the gate rejects it (``force`` overrides)."""
        rgb = load_rgb(path)
        result: dict = {"image": str(path)}
        if gate:
            from mobile_derm_quality import GateConfig, assess

            # a skin-check model named in the packed config lies beside the model file (export copies it)
            config = (GateConfig.from_dict(self.info.gate_config).resolve_paths(self.model_path.parent)
                      if self.info.gate_config else None)
            verdict = assess(rgb, config, min_model_input=self.info.input_size)
            result["quality"] = verdict.to_dict()
            if verdict.decision == "reject" and not force:
                result["classified"] = False
                return result
        result["classified"] = True
        probs, unfamiliarity = self.predict(rgb)
        result.update(self.explain(probs, top_k, unfamiliarity))
        return result
