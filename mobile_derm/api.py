"""The Python API: train, evaluate, export and benchmark a classifier in a few calls.

In the spirit of MediaPipe Model Maker's ``ImageClassifier.create(...)`` /
``model.export_model()``, but for this package's whole job. The ``mobile-derm``
command line and ``mobile-derm demo`` are thin layers over it: the chain
train -> load -> export -> benchmark is written here once.

>>> from mobile_derm import Classifier, TrainConfig, load_dataset    # doctest: +SKIP
>>> data = load_dataset("runs/demo/data")                            # doctest: +SKIP
>>> clf = Classifier.train(data, TrainConfig(input_size=64, finetune_epochs=1), out="runs/quick")  # doctest: +SKIP
>>> paths = clf.export("runs/quick/models", variants=("float32", "int8"))  # doctest: +SKIP
>>> rows = clf.benchmark("runs/quick/models")                        # doctest: +SKIP
>>> rows["int8"]["agreement_with_float"]                             # doctest: +SKIP
0.97

(The examples are run by tests/mobile_derm/test_api.py on the tiny demo data.)
Nothing here imports TensorFlow until a method needs it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from mobile_derm.errors import ConfigError

from mobile_derm_export.convert import DEFAULT_VARIANTS as DEFAULT_EXPORT_VARIANTS  # the default lives there


def load_dataset(data, data_root: str | Path | None = None):
    """A Dataset from a preset name (ham10000, pad_ufes20, derm7pt, sd198, ood; found
    under ``data_root``, default ``$MOBILE_DERM_DATA`` or ../shared/data), a labels CSV
    (columns ``image``, ``label``, optional ``group``), a folder holding such a
    ``labels.csv`` (as ``mobile-derm demo`` writes), a class-per-folder tree, or a folder
    of TFRecord shards (``mobile-derm write-shards``; a local path or a URL such as
    gs://...: training streams it). A Dataset is returned as it is.

    >>> data = load_dataset("runs/demo/data")  # doctest: +SKIP
    >>> len(data.classes)                      # doctest: +SKIP
    6
    """
    from mobile_derm.datasets.sources import PRESETS, Dataset, load

    from mobile_derm.datasets.shards import is_shard_location, read_shards

    if isinstance(data, Dataset):
        return data
    if str(data) not in PRESETS and is_shard_location(data):
        return read_shards(data, progress=True)
    if str(data) not in PRESETS and (Path(data) / "labels.csv").is_file():
        data = Path(data) / "labels.csv"
    return load(data, data_root)


class Classifier:
    """A trained run: its folder, Keras model, TrainConfig and ModelInfo, and the
    data set it was trained on (needed by ``evaluate``, ``export`` and ``benchmark``,
    which use the run's saved split of it).

    Make one with ``Classifier.train(...)`` or ``Classifier.load(run_dir, data)``.
    """

    def __init__(self, run_dir: str | Path, model, config, info, data=None, test_report: dict | None = None):
        self.run_dir = Path(run_dir)
        self.model = model  # keras.Model
        self.config = config  # TrainConfig
        self.info = info  # ModelInfo
        self.data = data  # the training Dataset, or None if not given to load()
        self.test_report = test_report  # the test-split report training wrote (train() only)
        self._arrays = None

    # ------------------------------------------------------------ making one
    @classmethod
    def train(cls, data, config=None, out: str | Path | None = None, *, taxonomy=None,
              data_root: str | Path | None = None, progress: bool = True, distribution=None) -> "Classifier":
        """Train (or resume, if ``out`` holds an unfinished run) on ``data`` (a Dataset,
        or anything ``load_dataset`` takes) with ``config`` (a TrainConfig; default
        TrainConfig()), into the run folder ``out``. ``taxonomy``: a Taxonomy for your
        labels (default the shipped one). ``distribution``: where fine-tuning runs (a
        ``mobile_derm.training.distribute.Distribution``; default one device); on a
        worker that is not the chief the result has no info and an empty report.

        >>> clf = Classifier.train("runs/demo/data", TrainConfig(input_size=64), out="runs/quick")  # doctest: +SKIP
        >>> clf.test_report["balanced_accuracy"]  # doctest: +SKIP
        0.91
        """
        from mobile_derm.training.config import TrainConfig
        from mobile_derm.training.distribute import Distribution, strategy_for
        from mobile_derm.training.fit import train

        distribution = distribution or Distribution()
        strategy_for(distribution.strategy)  # first: multi_worker must precede any TensorFlow work
        if out is None:
            raise ConfigError(None, "Classifier.train needs out=, the run folder to write")
        config = config or TrainConfig()
        dataset = load_dataset(data, data_root)
        result = train(dataset, config, out, taxonomy=taxonomy, progress=progress, distribution=distribution)
        return cls(out, result.model, config, result.info, dataset, result.test_report)

    @classmethod
    def load(cls, run_dir: str | Path, data=None, *, data_root: str | Path | None = None) -> "Classifier":
        """A finished run read back from its folder. ``data``: the data set it was trained
        on (a Dataset or what ``load_dataset`` takes), for evaluate/export/benchmark.

        >>> clf = Classifier.load("runs/demo/run", "runs/demo/data/labels.csv")  # doctest: +SKIP
        """
        from mobile_derm.training.runs import load_run

        model, config, info = load_run(run_dir)
        return cls(run_dir, model, config, info, None if data is None else load_dataset(data, data_root))

    # ------------------------------------------------------------ the run's data
    def _run_arrays(self, progress: bool = True):
        """Pixels, label indices and the saved split of the training data (once per object)."""
        if self.data is None:
            raise ConfigError(self.run_dir, "the run's data set is needed here: "
                                            "give it as Classifier.load(run_dir, data)")
        if self._arrays is None:
            from mobile_derm.training.runs import run_arrays

            self._arrays = run_arrays(self.data, self.run_dir, progress=progress)
        return self._arrays

    def _test_split(self, progress: bool = True):
        """Test-split pixels, labels and the Keras probabilities (averaged over the
        run's test-time views, as the exported models do)."""
        import numpy as np

        from mobile_derm.model.classifier import view_averaged_probs

        pixels, y, split = self._run_arrays(progress)
        test = np.asarray(split.test)
        probs = view_averaged_probs(self.model, pixels[test], self.info.mean, self.info.std, self.info.test_time_views)
        return pixels[test], y[test], probs

    # ------------------------------------------------------------ using one
    def evaluate(self, data=None, out: str | Path | None = None) -> dict:
        """Metrics of the Keras model on the run's own test split (top-1/3, balanced
        accuracy, malignancy AUC and operating points, ECE, per-class recall, 95%
        intervals); with ``out``, also the report files and plots there.

        With ``data`` (another data set), the external report instead: see
        ``evaluate_external``.

        >>> clf.evaluate()["balanced_accuracy"]  # doctest: +SKIP
        0.91
        >>> clf.evaluate("derm7pt")["malignancy_on_all_photos"]["auc"]  # doctest: +SKIP
        0.78
        """
        from mobile_derm.evaluation.report import evaluate_probs

        if data is not None:
            return evaluate_external(self, data, out)
        import numpy as np

        _, y, probs = self._test_split()
        groups = self.data.groups_array()[np.asarray(self._run_arrays()[2].test)]  # as the training report
        return evaluate_probs(probs, y, self.info, out_dir=out, title=f"{self.info.name} (Keras float, test split)",
                              groups=groups)

    def export(self, out: str | Path, variants=DEFAULT_EXPORT_VARIANTS, *, io_type: str = "uint8",
               gate_config=None, qat_epochs: int = 2, qat_learning_rate: float = 1e-5) -> dict[str, Path]:
        """Write ``<variant>.tflite`` files with metadata into ``out`` and return
        {variant: path}. Variants: float32, float16, int8, qat_int8
        (quantization-aware distillation, ``qat_epochs`` at ``qat_learning_rate``).
        Integer variants are calibrated on training images. ``gate_config``: the
        quality gate to pack instead of the run's (a GateConfig, a config file, or
        "default" for this version's built-in one).

        >>> paths = clf.export("runs/quick/models", variants=("float32", "int8"))  # doctest: +SKIP
        >>> paths["int8"].name  # doctest: +SKIP
        'int8.tflite'
        """
        import numpy as np

        from mobile_derm.model.familiarity import load_for_run
        from mobile_derm_export.convert import check_variants
        from mobile_derm_export.exporter import export_variants, representative_sample

        variants = check_variants(variants)
        info = self.info
        if gate_config is not None:
            info = dataclasses.replace(info, gate_config=_gate_config(gate_config).to_dict())
        pixels, y, split = self._run_arrays()
        train = np.asarray(split.train)
        calibration = representative_sample(pixels[train], self.config.representative_size, self.config.seed)
        qat_model = None
        if "qat_int8" in variants:
            from mobile_derm_export.qat import quantization_aware_finetune

            qat_model = quantization_aware_finetune(self.model, self.config, pixels[train], pixels[np.asarray(split.val)],
                                                    epochs=qat_epochs, learning_rate=qat_learning_rate)
        from mobile_derm.evaluation.model_card import ModelCardContext

        return export_variants(self.model, info, out, variants, calibration, io_type=io_type, qat_model=qat_model,
                               familiarity=load_for_run(self.run_dir, info),
                               card=ModelCardContext.for_run(self.run_dir, self.data, split, pixels, y))

    def benchmark(self, models_dir: str | Path, out: str | Path | None = None, *, latency_runs: int | None = None,
                  progress: bool = True) -> dict[str, dict]:
        """Accuracy, agreement with the Keras model, size and LiteRT latency of every
        ``<variant>.tflite`` in ``models_dir``, on the run's test split. Writes
        benchmark.json, .md and .png into ``out`` (default ``models_dir``) and returns
        the rows: {"keras_float": {...}, "float32": {...}, ...}.

        >>> rows = clf.benchmark("runs/quick/models")  # doctest: +SKIP
        >>> sorted(rows)  # doctest: +SKIP
        ['float32', 'int8', 'keras_float']
        """
        from mobile_derm.errors import DataError
        from mobile_derm_export.benchmark import LATENCY_RUNS, run_benchmark
        from mobile_derm_export.convert import ALL_VARIANTS

        models_dir = Path(models_dir)
        models = {v: models_dir / f"{v}.tflite" for v in ALL_VARIANTS if (models_dir / f"{v}.tflite").is_file()}
        if not models:
            raise DataError(models_dir, "no <variant>.tflite files found (export the run first)")
        pixels, y, keras_probs = self._test_split(progress)
        document = run_benchmark(self.info, pixels, y, models, out or models_dir, keras_probs=keras_probs,
                                 latency_runs=latency_runs or LATENCY_RUNS, progress=progress)
        return document["variants"]

    def ood_eval(self, other_sets: dict, out: str | Path | None = None, models: dict | None = None,
                 progress: bool = True) -> dict:
        """How often the run abstains (softmax, feature familiarity) on its test split and
        on ``other_sets`` (name -> Dataset); ``models``: name -> exported .tflite, scored
        the same way. Writes ood_eval.json/.md/.png into ``out`` (default RUN/ood_eval)."""
        from mobile_derm.evaluation.other_sets import run_ood_eval

        if self.data is None:
            raise ConfigError(self.run_dir, "the run's data set is needed here: give it as Classifier.load(run_dir, data)")
        return run_ood_eval(self.run_dir, self.data, other_sets, out or self.run_dir / "ood_eval", models=models,
                            progress=progress, loaded=(self.model, self.config, self.info))


def evaluate_external(model, data, out: str | Path | None = None, *, taxonomy=None,
                      data_root: str | Path | None = None, progress: bool = True) -> dict:
    """Score ``model`` (a Classifier, or an exported ``.tflite`` run on LiteRT as an app runs
    it) on another data set, its labels mapped onto the model's through the taxonomy's
    ``counts_as`` (``mobile_derm.evaluation.external``); with ``out``, external.json/.md there.
    Reporting only: choose nothing on these figures.

    >>> report = evaluate_external("runs/ham/models/int8.tflite", "derm7pt")  # doctest: +SKIP
    >>> report["malignancy_on_all_photos"]["sensitive"]["sensitivity"]  # doctest: +SKIP
    0.83
    """
    from mobile_derm.evaluation.external import evaluate_external as external_report
    from mobile_derm.taxonomy import Taxonomy
    from mobile_derm.training.runs import dataset_pixels

    dataset = load_dataset(data, data_root)
    taxonomy = taxonomy or Taxonomy.load()
    if isinstance(model, Classifier):
        from mobile_derm.model.classifier import view_averaged_probs

        info = model.info
        pixels = dataset_pixels(dataset, info.input_size, progress=progress)
        probs, unfamiliarity = view_averaged_probs(model.model, pixels, info.mean, info.std, info.test_time_views), None
    else:
        import numpy as np
        from tqdm import tqdm

        from mobile_derm.app.predict import Predictor

        predictor = Predictor(model)
        info = predictor.info
        # the photos as the cache holds them (centre square at the input size, SD-198's banner
        # cropped): the Predictor's own resize then leaves them as they are
        pixels = dataset_pixels(dataset, info.input_size, progress=progress)
        scored = [predictor.scores(p) for p in tqdm(pixels, desc=f"score {Path(model).name}", disable=not progress)]
        probs = np.stack([s[0] for s in scored])
        unfamiliarity = None if scored[0][1] is None else np.array([s[1] for s in scored])
    return external_report(probs, [s.label for s in dataset.samples], info, taxonomy, dataset.name,
                           groups=dataset.groups_array(), unfamiliarity=unfamiliarity, out_dir=out)


def export_folds(crossval_dir: str | Path, data, variants=("float32", "int8"), *, external=(),
                 external_variant: str = "int8", data_root: str | Path | None = None, progress: bool = True) -> dict:
    """The files an app would ship from a finished ``crossval``: each fold's run
    (``crossval_dir/fold<k>``) exported into ``fold<k>/models`` (model card included), its
    files run on LiteRT on that fold's test photos, and every variant's out-of-fold figures
    pooled like the Keras ones (``crossval.pooled_report``: patient-level intervals), with
    each variant's abstention agreement with float32 on the test photos. ``external`` (data
    set names): each fold's ``external_variant`` file (the one an app ships) is scored on
    them; reported as mean and spread over folds. A crossval made before runs kept their
    test outputs (``eval/test_outputs.npz``) gets them computed here from the fold's model.
    Files and external reports already in ``fold<k>/models`` are kept (delete it to export again).
    Writes ``crossval_exported.json`` / ``.md`` in ``crossval_dir``.

    >>> export_folds("runs/pad", "pad_ufes20", external=["sd198"])["pooled"]["int8"]["ece"]  # doctest: +SKIP
    0.04
    """
    import json

    import numpy as np

    from mobile_derm.app.model_file import read_model_info
    from mobile_derm.io_utils import atomic_write_text
    from mobile_derm.training.crossval import fold_outputs, pooled_markdown, pooled_report
    from mobile_derm.training.runs import TEST_OUTPUTS_FILE, save_test_outputs
    from mobile_derm_export.benchmark import FLOAT_VARIANT, abstention_columns, tflite_outputs

    crossval_dir = Path(crossval_dir)
    fold_dirs = sorted((d for d in crossval_dir.glob("fold*") if (d / "model_info.json").is_file()),
                       key=lambda d: int(d.name.removeprefix("fold")))
    if not fold_dirs:
        raise ConfigError(crossval_dir, "holds no finished fold (fold<k>/model_info.json): run mobile-derm crossval first")
    dataset = load_dataset(data, data_root)
    keras, exported = [], {v: [] for v in variants}
    agreement: dict[str, list] = {}
    external_rows: dict[str, dict[str, list]] = {}
    # a preset's name, or a labels file / folder named as `mobile-derm evaluate` names its output
    external = {Path(str(name)).stem: name for name in external}
    if external and external_variant not in variants:
        raise ConfigError(None, f"external data sets are scored on the {external_variant} files: export that variant too")
    for fold_dir in fold_dirs:
        classifier = Classifier.load(fold_dir, dataset)
        pixels, y, split = classifier._run_arrays(progress)
        test = np.asarray(split.test)
        groups = dataset.groups_array()[test]
        if not (fold_dir / "eval" / TEST_OUTPUTS_FILE).is_file():
            save_test_outputs(fold_dir, classifier._test_split(progress)[2], y[test], groups)
        paths = {v: fold_dir / "models" / f"{v}.tflite" for v in variants}
        if not all(path.is_file() for path in paths.values()):  # files already there are kept (resumes)
            paths = classifier.export(fold_dir / "models", variants)
        outputs, infos = {}, {}
        for variant, path in paths.items():
            infos[variant] = read_model_info(path)
            outputs[variant] = {"test": tflite_outputs(path, pixels[test], progress)}
            exported[variant].append({"probs": outputs[variant]["test"][0], "y": y[test], "groups": groups,
                                      "info": infos[variant]})
        for name, source in external.items():
            done = fold_dir / "models" / f"external_{name}" / "external.json"
            if done.is_file() and done.stat().st_mtime > paths[external_variant].stat().st_mtime:
                report = json.loads(done.read_text())
            else:
                report = evaluate_external(paths[external_variant], source, done.parent, data_root=data_root,
                                           progress=progress)
            external_rows.setdefault(name, {}).setdefault(external_variant, []).append(report)
        for variant, row in abstention_columns(infos, outputs).items():
            agreement.setdefault(variant, []).append((len(test), row["abstention_agreement_with_float"]))
        keras.append(fold_outputs(fold_dir))
    pooled = {"Keras float": pooled_report(keras), **{v: pooled_report(exported[v]) for v in variants}}
    for variant, parts in agreement.items():
        if variant != FLOAT_VARIANT:
            pooled[variant]["abstention_agreement_with_float"] = float(
                sum(n * a for n, a in parts) / sum(n for n, _ in parts))
    document = {"folds": [d.name for d in fold_dirs], "variants": list(variants), "pooled": pooled,
                "external": {name: {kind: _mean_spread(reports) for kind, reports in by_kind.items()}
                             for name, by_kind in external_rows.items()}}
    atomic_write_text(crossval_dir / "crossval_exported.json", json.dumps(document, indent=2))
    lines = [f"# {crossval_dir.name}: each fold's exported files ({', '.join(variants)})", "", pooled_markdown(pooled)]
    for variant, r in pooled.items():
        if "abstention_agreement_with_float" in r:
            lines.append(f"- {variant}: abstention agreement with float32 on the test photos "
                         f"{r['abstention_agreement_with_float']:.3f}")
    for name, by_kind in document["external"].items():
        lines += ["", f"External: {name} (mean +- std over the {len(fold_dirs)} fold models; reporting only)", "",
                  "| model | photos (mapped) | balanced accuracy | malignancy AUC | ECE (mapped) |", "|---|---|---|---|---|"]
        for kind, m in by_kind.items():
            lines.append(f"| {kind} | {m['n']} ({m['n_mapped']}) | " + " | ".join(
                f"{m[k][0]:.3f} +- {m[k][1]:.3f}" if m[k] else "-" for k in ("balanced_accuracy", "malignancy_auc", "ece"))
                + " |")
    atomic_write_text(crossval_dir / "crossval_exported.md", "\n".join(lines) + "\n")
    return document


def _mean_spread(reports: list[dict]) -> dict:
    """Mean and standard deviation over folds of an external report's headline figures."""
    import numpy as np

    def stat(values):
        values = np.array([v for v in values if v is not None], dtype=np.float64)
        return [float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0] if len(values) else None

    return {"n": reports[0]["n"], "n_mapped": reports[0]["n_mapped"],
            "balanced_accuracy": stat(r["classification_on_mapped_photos"]["balanced_accuracy"] for r in reports),
            "ece": stat(r["classification_on_mapped_photos"]["ece"] for r in reports),
            "malignancy_auc": stat(r["malignancy_on_all_photos"]["auc"] for r in reports)}


def _gate_config(value):
    """A GateConfig from a GateConfig, a config file path, or "default"."""
    from mobile_derm_quality import GateConfig

    if isinstance(value, GateConfig):
        return value
    return GateConfig.default() if value == "default" else GateConfig.load(value)
