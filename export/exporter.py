"""Export a trained run to .tflite files, each carrying the run's ModelInfo."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from mobile_derm_export.convert import check_variants
from mobile_derm.errors import ConfigError
from mobile_derm.app.model_info import ModelInfo
from mobile_derm.app.preprocess import normalize


def representative_sample(pixels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """A fixed random subset of training pixels for int8 calibration, plus one
    black and one white frame: they pin the input range to the full 0..255, so
    a uint8 input tensor maps raw pixels exactly as the float model's
    normalization does (MediaPipe feeds raw pixels to uint8 models)."""
    rng = np.random.default_rng(seed)
    take = rng.choice(len(pixels), size=min(n, len(pixels)), replace=False)
    extremes = np.stack([np.zeros_like(pixels[0]), np.full_like(pixels[0], 255)])
    return np.concatenate([pixels[np.sort(take)], extremes])


def export_variants(model, info: ModelInfo, out_dir: str | Path, variants, calibration_pixels: np.ndarray,
                    io_type: str = "uint8", qat_model=None, familiarity=None, card=None) -> dict[str, Path]:
    """Convert ``model`` into each variant and write ``<variant>.tflite`` with
    metadata. ``calibration_pixels`` are uint8 training images; ``qat_model``
    is needed for ``qat_int8``; ``familiarity`` (a FamiliarityModel, recorded in
    ``info.familiarity``) adds the unfamiliarity score as every model's second output;
    ``info.test_time_views`` other than "none" makes every model average its outputs over
    those views of the input (``mobile_derm.model.views``).

    Every export writes a model card (``model_card.md``, ``mobile_derm.evaluation.model_card``)
    beside the files and packs it into each. ``card`` (a ModelCardContext: the run, its data
    and split, the test pixels) fills in its figures: the run's test report, subgroups, and
    each variant measured against float32 here; without it those sections say "not measured"."""
    from mobile_derm.app.model_file import MODEL_CARD_FILENAME
    from mobile_derm.evaluation import model_card
    from mobile_derm.io_utils import atomic_write_text
    from mobile_derm_export.convert import convert
    from mobile_derm_export.metadata import write_model_file

    variants = check_variants(variants)
    if (familiarity is None) != (info.familiarity is None):
        raise ConfigError(None, "the familiarity model and ModelInfo.familiarity come together (both or neither)")
    if familiarity is not None:
        from mobile_derm.model.familiarity import with_unfamiliarity

        model = with_unfamiliarity(model, familiarity)
        qat_model = with_unfamiliarity(qat_model, familiarity) if qat_model is not None else None
    if info.test_time_views != "none":
        # the views go inside the model file: an app feeds one image and gets the average
        from mobile_derm.model.views import with_view_averaging

        model = with_view_averaging(model, info.test_time_views)
        qat_model = with_view_averaging(qat_model, info.test_time_views) if qat_model is not None else None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = _ship_skin_check(info, out_dir)
    info = _ship_gate_model(info, out_dir)
    representative = normalize(calibration_pixels, info.mean, info.std)
    converted = {}
    ptq = [v for v in variants if v != "qat_int8"]
    with tqdm(total=len(variants), desc="export", unit="model") as bar:
        for variant in ptq:
            bar.set_postfix_str(variant)
            converted[variant] = convert(model, variant, representative, io_type)
            bar.update()
        if "qat_int8" in variants:
            if qat_model is None:
                raise ConfigError(None, "variant qat_int8 needs a quantization-aware-trained model")
            bar.set_postfix_str("qat_int8")
            converted["qat_int8"] = convert(qat_model, "qat_int8", representative, io_type)
            bar.update()
    infos = {variant: info for variant in converted}
    if card is not None and card.val_pixels is not None and len(card.val_pixels):
        infos = thresholds_per_variant(converted, info, card)
    quantization = subgroups = None
    if card is not None:
        quantization, test_probs = measure_variants(converted, infos, card.test_pixels, card.y_test)
        subgroups = model_card.subgroup_table(card.dataset, card.split.test, test_probs, card.y_test, card.test_groups(), info)
    text = model_card.render(info, card, quantization, subgroups)
    atomic_write_text(out_dir / MODEL_CARD_FILENAME, text)
    return {variant: write_model_file(out_dir / f"{variant}.tflite", data, infos[variant], text)
            for variant, data in converted.items()}


def _variant_outputs(converted: dict[str, bytes], info: ModelInfo, sets: dict[str, np.ndarray]) -> dict[str, dict]:
    """variant -> set name -> (probs, unfamiliarity) of each converted file on LiteRT."""
    import tempfile

    from mobile_derm.app.predict import LiteRTModel
    from mobile_derm_export.benchmark import tflite_outputs

    outputs = {}
    with tempfile.TemporaryDirectory(prefix="mobile_derm_measure_") as tmp:
        for variant, data in converted.items():
            path = Path(tmp) / f"{variant}.tflite"
            path.write_bytes(data)
            runner = LiteRTModel(path, info.mean, info.std, num_threads=2)
            outputs[variant] = {name: tflite_outputs(runner, pixels, progress=False) for name, pixels in sets.items()}
    return outputs


def thresholds_per_variant(converted: dict[str, bytes], info: ModelInfo, card) -> dict[str, ModelInfo]:
    """Each variant's ModelInfo with its operating points and abstention threshold chosen
    again on its own validation outputs, with the run's targets: the thresholds an app
    applies are chosen on the scores of the file it runs (an integer model's probabilities
    sit on a grid of 1/256 and cannot reach a float threshold such as 0.9999). Only the
    thresholds differ; the decision step and calibration are the run's."""
    import dataclasses

    from mobile_derm.evaluation.report import operating_points
    from mobile_derm.training.config import TrainConfig

    config = TrainConfig.load(Path(card.run_dir) / "train_config.json")
    outputs = _variant_outputs(converted, info, {"val": card.val_pixels})
    infos = {}
    for variant, by_set in outputs.items():
        points = operating_points(by_set["val"][0], card.y_val, info.malignant_mask(), config)
        infos[variant] = dataclasses.replace(info, malignancy_thresholds=points["malignancy_thresholds"],
                                             malignancy_targets=points["malignancy_targets"],
                                             ood_threshold=points["ood_threshold"])
    return infos


def measure_variants(converted: dict[str, bytes], infos: dict[str, ModelInfo], test_pixels: np.ndarray,
                     y_test: np.ndarray) -> tuple[dict[str, dict], np.ndarray]:
    """Each converted variant (with its ModelInfo, ``infos``) on the test split and on
    generated non-skin images, against float32 (the first variant if float32 was not
    exported): size, top-1, balanced accuracy, top-1 agreement and the benchmark's
    abstention columns. Returns the rows and the reference variant's test probabilities
    (for the card's subgroups)."""
    from mobile_derm.evaluation import metrics
    from mobile_derm.model.familiarity import non_skin_images
    from mobile_derm_export.benchmark import FLOAT_VARIANT, NON_SKIN_SET, abstention_columns

    reference = FLOAT_VARIANT if FLOAT_VARIANT in converted else next(iter(converted))
    info = infos[reference]
    outputs = _variant_outputs(converted, info, {"test": test_pixels, NON_SKIN_SET: non_skin_images(info.input_size)})
    # abstention_columns compares with float32; rename the reference if float32 was not exported
    renamed = {(FLOAT_VARIANT if v == reference else v): v for v in outputs}
    abstention = abstention_columns({name: infos[v] for name, v in renamed.items()},
                                    {name: outputs[v] for name, v in renamed.items()})
    reference_probs = outputs[reference]["test"][0]
    rows = {}
    for variant, by_set in outputs.items():
        probs = by_set["test"][0]
        pred = info.decide(probs)
        rows[variant] = {"size_bytes": len(converted[variant]), "top1": float(np.mean(pred == y_test)),
                         "balanced_accuracy": metrics.balanced_accuracy(y_test, pred, probs.shape[1]),
                         "agreement_with_float": float(np.mean(pred == info.decide(reference_probs))),
                         "ood_threshold": infos[variant].ood_threshold,
                         "malignancy_thresholds": infos[variant].malignancy_thresholds,
                         **abstention.get(FLOAT_VARIANT if variant == reference else variant, {})}
    return rows, reference_probs


def _ship_skin_check(info: ModelInfo, out_dir: Path) -> ModelInfo:
    """If the gate config uses a learned skin check (mobile_derm_quality.not_skin), copy its
    model beside the exported models and point the packed config at that copy by name,
    so the folder is what an app ships. Returns the ModelInfo to pack."""
    import copy
    import dataclasses

    gate = info.gate_config or {}
    source = gate.get("skin_check_model")
    if not source:
        return info
    source = Path(source)
    if not source.is_file():
        raise ConfigError(source, "the gate config's skin-check model file is missing")
    from mobile_derm_export.not_skin_model import MODEL_FILENAME
    from mobile_derm.io_utils import atomic_write_bytes

    atomic_write_bytes(out_dir / MODEL_FILENAME, source.read_bytes())
    gate = copy.deepcopy(gate)
    gate["skin_check_model"] = MODEL_FILENAME
    return dataclasses.replace(info, gate_config=gate)


def _ship_gate_model(info: ModelInfo, out_dir: Path) -> ModelInfo:
    """Write the gate's TFLite twin (mobile_derm_export.gate_model) beside the models and name
    it in the packed gate config, so an app gates with the same numbers on its TFLite runtime.
    A config the twin cannot express (the learned not-skin check) gets none, with a warning."""
    import dataclasses
    import warnings

    from mobile_derm_export.gate_model import write_gate_model
    from mobile_derm_quality import GateConfig
    from mobile_derm_quality.gate_twin import CONFIG_POINTER_KEY, MODEL_FILENAME, GateTwinError

    config = GateConfig.from_dict(info.gate_config) if info.gate_config else GateConfig.default()
    try:
        write_gate_model(config, out_dir / MODEL_FILENAME)
    except GateTwinError as exc:
        warnings.warn(f"{MODEL_FILENAME} not written: {exc.problem}", stacklevel=2)
        return info
    gate = dict(info.gate_config or config.to_dict())
    gate[CONFIG_POINTER_KEY] = MODEL_FILENAME
    return dataclasses.replace(info, gate_config=gate)
