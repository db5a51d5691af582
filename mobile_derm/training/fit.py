"""Training on a 2-core CPU: cache pixels, fit the head on cached features,
then fine-tune end to end; every stage resumes after a kill (the run folder's
layout is in ``mobile_derm.training.runs``). Fine-tuning can also run on several
devices or machines (``mobile_derm.training.distribute``, docs/distributed.md).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobile_derm.app.model_info import ModelInfo
from mobile_derm.io_utils import atomic_path, atomic_write_text
from mobile_derm.model.classifier import (build_classifier, ensemble_classifier, feature_extractor, features_and_probs,
                                          freeze_batchnorm, fold_into_heads, predict_probs, view_stack)
from mobile_derm.training.config import TrainConfig
from mobile_derm_quality.quiet import verbose
from mobile_derm.training.runs import save_final_weights, save_test_outputs, start_run, training_images
from mobile_derm.training import distribute
from mobile_derm.training.distribute import Distribution


def class_weights(y: np.ndarray, n_classes: int, mode: str) -> np.ndarray:
    """Per-class loss weights (``TrainConfig.class_weighting``: "none" or "balanced",
    inverse class frequency), scaled to mean 1 over the training images."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = np.ones(n_classes) if mode == "none" else np.where(counts > 0, counts.sum() / np.maximum(counts, 1), 0.0)
    w = w / max(np.sum(w * counts) / max(counts.sum(), 1), 1e-12)
    return w.astype(np.float32)


@dataclass
class TrainResult:
    run_dir: Path
    model: object  # keras.Model
    info: ModelInfo | None  # None (and an empty report) on a worker that is not the chief
    test_report: dict


def _smoothed_loss(label_smoothing: float, n_classes: int, logit_shift: np.ndarray | None = None):
    """Cross-entropy on the softmax output; with ``logit_shift`` (tau * log prior, the
    logit-adjusted loss) the shift is added to the logits inside the loss only."""
    from mobile_derm.tf_setup import keras, tf

    # reduction="none": one loss per image, so Keras can apply the per-image
    # class weights (a pre-reduced scalar would silently ignore them).
    cce = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing, reduction="none",
                                               from_logits=logit_shift is not None)
    shift = None if logit_shift is None else tf.constant(np.asarray(logit_shift, np.float32))

    def loss(y_true, y_pred):
        y = tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), n_classes)
        if shift is None:
            return cce(y, y_pred)
        # log softmax output = logits up to a per-image constant, which softmax ignores
        return cce(y, tf.math.log(tf.clip_by_value(y_pred, 1e-7, 1.0)) + shift)

    return loss


def training_prior(y_train: np.ndarray, n_classes: int) -> np.ndarray:
    """Each class's share of the training images (at least one image's worth, so log is finite)."""
    return np.maximum(np.bincount(y_train, minlength=n_classes), 1) / max(len(y_train), 1)


def training_logit_shift(y_train: np.ndarray, n_classes: int, tau: float) -> np.ndarray | None:
    """tau * log(training prior), centred, for the logit-adjusted loss; None when tau is 0.
    It is the opposite of the post-hoc shift: the loss adds the prior that prediction leaves out."""
    from mobile_derm.training.logit_adjustment import prior_shift

    if not tau:
        return None
    return (-prior_shift(training_prior(y_train, n_classes), tau)).astype(np.float32)


def _warmup_cosine(base_lr: float, total_steps: int, warmup_steps: int):
    from mobile_derm.tf_setup import keras, tf

    class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            warm = base_lr * (step + 1.0) / max(warmup_steps, 1)
            progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
            cosine = 0.5 * base_lr * (1.0 + tf.cos(np.pi * tf.clip_by_value(progress, 0.0, 1.0)))
            return tf.where(step < warmup_steps, warm, cosine)

        def get_config(self):
            return {"base_lr": base_lr, "total_steps": total_steps, "warmup_steps": warmup_steps}

    return WarmupCosine()


def _fit_head(model, features_train, y_train, features_val, y_val, config, n_classes, weights_per_class, loss):
    """Stage 1: the softmax layer alone, on features computed once, with fine-tuning's ``loss``."""
    from mobile_derm.tf_setup import keras

    keras.utils.set_random_seed(config.seed)
    head = keras.Sequential([keras.Input(features_train.shape[1:]), keras.layers.Dense(n_classes, activation="softmax")])
    head.compile(
        optimizer=keras.optimizers.Adam(config.head_learning_rate),
        loss=loss,
        metrics=["accuracy"],
    )
    history = head.fit(
        features_train, y_train,
        sample_weight=weights_per_class[y_train],
        validation_data=(features_val, y_val, weights_per_class[y_val]),
        # seconds of work: one summary line below instead of a line per epoch, unless verbose
        epochs=config.head_epochs, batch_size=64, verbose=2 if verbose() else 0,
        callbacks=[keras.callbacks.EarlyStopping(patience=5, restore_best_weights=True)],
    )
    model.get_layer("head").set_weights(head.layers[-1].get_weights())
    record = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    best = int(np.argmin(record["val_loss"]))
    print(f"stage 1: head trained for {len(record['val_loss'])} epochs, best val_loss {record['val_loss'][best]:.4f} "
          f"(val accuracy {record['val_accuracy'][best]:.3f}) at epoch {best + 1}")
    return record


def _calibrate(model, val_view_probs, y_val, y_train, n_classes: int, config: TrainConfig):
    """Temperature scaling on validation, folded into ``model``'s heads (in place), then
    the class-balanced decision step (``config.logit_adjustment``) on the calibrated
    probabilities. Returns the two records for ModelInfo (the decision's is None without
    a step) and the calibrated validation probabilities (views averaged)."""
    from mobile_derm.training.calibration import calibrate
    from mobile_derm.training.logit_adjustment import decision_step

    prior = training_prior(y_train, n_classes)
    calibration, val_probs = calibrate(val_view_probs, y_val, prior)
    fold_into_heads(model, np.asarray(calibration["shift"]), calibration["temperature"])
    decision = None
    if config.logit_adjustment != 0:  # a tau or "validation"
        decision = decision_step(val_probs, y_val, prior, config.logit_adjustment)
    return calibration, decision, val_probs


def _fit_single(config: TrainConfig, run_dir: Path, split, x_train, y_train, x_val, y_val, n_classes: int, progress: bool,
                distribution: Distribution = Distribution()):
    """One classifier: the head on cached features, then fine-tuning; a stage whose
    weights file is already in ``run_dir`` is not run again (resume). Under a
    strategy, only the chief runs stage 1 and writes files; every worker fine-tunes."""
    from mobile_derm.tf_setup import keras

    spec = config.spec
    strategy = distribute.strategy_for(distribution.strategy)
    chief = distribute.is_chief(strategy)
    keras.utils.set_random_seed(config.seed)
    model = build_classifier(config, n_classes)
    if chief:
        start_run(run_dir, split, config)
    # Validation is weighted like training, so early stopping and the head-versus-
    # fine-tuned choice judge the same (class-balanced) objective the model learns;
    # an unweighted validation loss penalises exactly the shift towards rare classes
    # that the weights ask for.
    weights_per_class = class_weights(y_train, n_classes, config.class_weighting)
    loss = _smoothed_loss(config.label_smoothing, n_classes,
                          training_logit_shift(y_train, n_classes, config.loss_logit_adjustment))

    history: dict = {}
    history_file = run_dir / "history.json"
    if history_file.is_file():
        history = json.loads(history_file.read_text())

    # ---- stage 1: head on cached features (the chief's; the other workers receive its weights before fine-tuning)
    head_file = run_dir / "head_weights.h5"
    if chief and head_file.is_file():
        model.load_weights(head_file)
    elif chief:
        feature_model = feature_extractor(model)
        print(f"stage 1: features for {len(x_train)} train / {len(x_val)} val images")
        f_train = predict_probs(feature_model, x_train, spec.mean, spec.std)
        f_val = predict_probs(feature_model, x_val, spec.mean, spec.std)
        history["head"] = _fit_head(model, f_train, y_train, f_val, y_val, config, n_classes, weights_per_class, loss)
        with atomic_path(head_file) as tmp:
            model.save_weights(str(tmp))
        atomic_write_text(history_file, json.dumps(history))

    # ---- stage 2: fine-tune everything, resumable
    final_file = run_dir / "weights.h5"
    # every worker takes the chief's branch (its run folder says what is left to do)
    if distribute.chief_decides(strategy, chief and final_file.is_file()):
        if chief:
            model.load_weights(final_file)
    elif config.finetune_epochs > 0:
        from mobile_derm.training.pipeline import make_dataset, steps_per_epoch, training_dataset

        replicas = 1 if strategy is None else strategy.num_replicas_in_sync
        global_batch, learning_rate = distribute.scaled_batch_and_rate(
            config.batch_size, config.finetune_learning_rate, replicas, distribution.batch_rule)
        steps = steps_per_epoch(len(x_train), global_batch, distribute.workers(strategy), drop_remainder=replicas > 1)
        schedule = _warmup_cosine(learning_rate, steps * config.finetune_epochs, int(steps * config.warmup_epochs))
        trained = model  # the default: the model itself; else a copy made under the strategy / precision policy
        with strategy.scope() if strategy else contextlib.nullcontext():
            if distribution != Distribution():
                keras.utils.set_random_seed(config.seed)
                trained = distribute.build_model(distribution, config, n_classes)
                trained.set_weights(model.get_weights())
                distribute.copy_chief_weights(strategy, trained)
                history["distribution"] = {**dataclasses.asdict(distribution), "replicas": replicas,
                                           "workers": distribute.workers(strategy), "global_batch": global_batch,
                                           "finetune_learning_rate": learning_rate}
            if not config.train_batchnorm:
                freeze_batchnorm(trained)
            trained.compile(
                optimizer=keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay),
                loss=loss,
                metrics=["accuracy"],
                jit_compile=distribution.jit_compile,
            )

        from mobile_derm.training.resume import BACKUP_DIR, STATE_DIR, ResumableEarlyStopping, epochs_done

        backup_dir = run_dir / BACKUP_DIR
        first_epoch = epochs_done(backup_dir)  # a killed run resumes at the epoch its backup ends with

        def train_input(input_context=None):
            return training_dataset(x_train, y_train, weights_per_class[y_train], spec.mean, spec.std, global_batch,
                                    config.seed, config.finetune_epochs, input_context, first_epoch=first_epoch)

        train_ds = train_input() if strategy is None else strategy.distribute_datasets_from_function(train_input)
        val_ds = make_dataset(x_val, y_val, spec.mean, spec.std, 64, training=False, sample_weights=weights_per_class[y_val])
        # Fine-tuning must pay for itself: it has to beat the head alone on
        # validation, or the head's weights are kept (small data sets overfit).
        head_val_loss = float(trained.evaluate(val_ds, verbose=0)[0])
        head_weights = model.get_weights()
        # the early-stopping state is written before BackupAndRestore saves the epoch (list order)
        stopper = ResumableEarlyStopping(backup_dir / STATE_DIR, first_epoch, write=chief,
                                         patience=config.early_stopping_patience)
        callbacks = [stopper, keras.callbacks.BackupAndRestore(str(backup_dir))]
        print(f"stage 2: fine-tuning {len(model.trainable_weights)} tensors for up to {config.finetune_epochs} epochs "
              f"(head alone: val_loss {head_val_loss:.4f})")
        if first_epoch:
            print(f"resuming after epoch {first_epoch} of {config.finetune_epochs} (the state in {backup_dir})")
        trained.fit(train_ds, validation_data=val_ds, epochs=config.finetune_epochs, steps_per_epoch=steps,
                    callbacks=callbacks, verbose=2 if not progress else 1)
        if trained is not model:
            model.set_weights(trained.get_weights())
        history["finetune"] = stopper.history  # every epoch's, the ones before a resume included
        history["head_val_loss"] = head_val_loss
        best_val_loss = min(history["finetune"].get("val_loss", [np.inf]))
        history["kept"] = "finetuned" if best_val_loss < head_val_loss else "head"
        if history["kept"] == "head":
            print(f"fine-tuning never beat the head on validation ({best_val_loss:.4f} >= {head_val_loss:.4f}): keeping the head")
            model.set_weights(head_weights)
        if chief:
            atomic_write_text(history_file, json.dumps(history))
            shutil.rmtree(backup_dir / STATE_DIR, ignore_errors=True)  # BackupAndRestore removed its own
    if chief:
        save_final_weights(model, final_file)
    return model


def _fit_members(dataset, config: TrainConfig, run_dir: Path, split, taxonomy, cache_dir, progress: bool,
                 distribution: Distribution = Distribution()):
    """An ensemble (``config.ensemble_members``): members trained on the same split, member k
    with seed ``config.seed + k`` (its own head initialisation, augmentation, order and
    dropout), each a run of its own in ``run_dir/member<k>`` (resumable like any run).
    No member sees the validation part, so everything chosen after training (calibration,
    the decision step, operating points, abstention) is chosen on the shipped average itself,
    on photos it never trained on. Returns the averaging model (None on a worker that is
    not the chief, which only takes part in the members' fine-tuning), and the members."""
    chief = distribute.is_chief(distribute.strategy_for(distribution.strategy))
    if chief:
        start_run(run_dir, split, config)
    members = []
    for k in range(config.ensemble_members):
        print(f"== ensemble member {k + 1}/{config.ensemble_members} (seed {config.seed + k})")
        # members are plain models: the decision step is chosen for the ensemble
        member_config = dataclasses.replace(config, ensemble_members=1, logit_adjustment=0.0, seed=config.seed + k)
        member = train(dataset, member_config, run_dir / f"member{k}", taxonomy=taxonomy, split=split,
                       cache_dir=cache_dir, progress=progress, distribution=distribution)
        members.append(member.model)
    if not chief:
        return None, members
    model = ensemble_classifier(members)
    save_final_weights(model, run_dir / "weights.h5")
    return model, members


def train(dataset, config: TrainConfig, run_dir: str | Path, taxonomy=None, split=None, cache_dir=None, progress=True,
          distribution: Distribution = Distribution()) -> TrainResult:
    """Train (or resume) a classifier on ``dataset`` into ``run_dir``; ``distribution``:
    where fine-tuning runs (one device by default; ``mobile_derm.training.distribute``).
    On a worker that is not the chief the result has no info and an empty report."""
    strategy = distribute.strategy_for(distribution.strategy)  # first: multi_worker must precede any TensorFlow work
    from mobile_derm.datasets import splits as splits_mod
    from mobile_derm.evaluation.report import evaluate_probs, operating_points, plot_calibration
    from mobile_derm.taxonomy import Taxonomy

    run_dir = Path(run_dir)
    spec, size = config.spec, config.input_size
    labels = list(dataset.classes)
    n_classes = len(labels)
    taxonomy = taxonomy or Taxonomy.load()
    taxonomy_entries = {label: entry.to_dict() for label, entry in taxonomy.for_labels(labels).items()}

    # The split is decided once and saved: a resumed run, export and the
    # benchmark all use exactly these test images.
    split_file = run_dir / "split.json"
    if split is None:
        if split_file.is_file():
            split = splits_mod.Split.load(split_file, dataset)
        else:
            split = splits_mod.split_grouped(dataset, config.split_fractions, seed=config.seed)

    # Decode everything before writing anything: a bad image stops the run
    # with its name and leaves no half-made run folder. (A data set in TFRecord
    # shards streams instead: its images were checked when the shards were written.)
    y_all = np.array([labels.index(s.label) for s in dataset.samples], dtype=np.int64)
    pixels = training_images(dataset, size, cache_dir, progress)
    idx_train, idx_val, idx_test = (np.asarray(i, dtype=np.int64) for i in (split.train, split.val, split.test))
    x_train, y_train = pixels[idx_train], y_all[idx_train]
    x_val, y_val = pixels[idx_val], y_all[idx_val]

    # An ensemble's features are member 0's (the unfamiliarity score reads them). (Calibration
    # below changes only the heads, so these are the trained features.)
    if config.ensemble_members > 1:
        model, members = _fit_members(dataset, config, run_dir, split, taxonomy, cache_dir, progress, distribution)
    else:
        model = _fit_single(config, run_dir, split, x_train, y_train, x_val, y_val, n_classes, progress, distribution)
        members = [model]
    if not distribute.is_chief(strategy):
        return TrainResult(run_dir, model if config.ensemble_members == 1 else None, None, {})
    familiarity_val_features, val_probs = features_and_probs(model, x_val, spec.mean, spec.std)
    # each member's views, stacked: calibration tempers each member and view before the
    # average, as the folded heads of the shipped model do
    val_view_probs = np.concatenate([view_stack(m, x_val, spec.mean, spec.std, config.test_time_views,
                                                as_given=val_probs if m is model else None) for m in members])

    # ---- calibration and the decision step, then operating points, on validation; report on test
    # With test-time views the probabilities are averaged over views (mobile_derm.model.views),
    # as the exported model does; the familiarity model keeps the photo as given.
    calibration, decision, val_probs = _calibrate(model, val_view_probs, y_val, y_train, n_classes, config)
    points = operating_points(val_probs, y_val, taxonomy.malignant_mask(labels), config)

    # ---- feature-space abstention (mobile_derm.model.familiarity), same keep fraction as the softmax one
    from mobile_derm.model import familiarity

    train_features = predict_probs(feature_extractor(model), x_train, spec.mean, spec.std)
    familiar = familiarity.fit(train_features, y_train).calibrate(familiarity_val_features, config.ood_keep_fraction)
    familiar.save(run_dir / familiarity.FILENAME)

    from mobile_derm_quality import GateConfig

    info = ModelInfo(
        name=f"mobile_derm_{dataset.name}_{spec.name}",
        version="1",
        backbone=spec.name,
        input_size=size,
        mean=spec.mean,
        std=spec.std,
        labels=labels,
        taxonomy=taxonomy_entries,
        malignancy_thresholds=points["malignancy_thresholds"],
        malignancy_targets=points["malignancy_targets"],
        ood_threshold=points["ood_threshold"],
        calibration=calibration,
        decision=decision,
        test_time_views=config.test_time_views,
        familiarity=familiar.summary(),
        gate_config=GateConfig.default().to_dict(),
        description=f"{dataset.name} classifier ({n_classes} classes, {spec.name} at {size}px"
                    f"{f', {config.ensemble_members} models averaged' if config.ensemble_members > 1 else ''}). "
                    "Decision support, not a diagnosis.",
    )
    info.save(run_dir / "model_info.json")

    test_features, test_probs = features_and_probs(model, pixels[idx_test], spec.mean, spec.std)
    test_view_probs = view_stack(model, pixels[idx_test], spec.mean, spec.std, config.test_time_views, as_given=test_probs)
    test_probs = test_view_probs.mean(axis=0)
    extra = {"familiarity_abstain_rate": float(np.mean(familiar.unfamiliar(test_features)))}
    if config.test_time_views != "none":
        # the photo as given, for the record: what the views added
        single = evaluate_probs(test_view_probs[0], y_all[idx_test], info)
        extra["single_view"] = {k: single[k] for k in ("top1", "top3", "balanced_accuracy", "malignancy_auc", "ece")}
    if config.ensemble_members == 1:
        # the same model before calibration, for the record and the reliability diagram
        # (an ensemble's average cannot be un-tempered exactly, so it has no such record)
        from mobile_derm.training.calibration import untemper

        raw = untemper(test_view_probs, calibration["temperature"], np.asarray(calibration["shift"]))
        before = evaluate_probs(raw, y_all[idx_test], dataclasses.replace(info, decision=None))
        extra["uncalibrated"] = {k: before[k] for k in ("top1", "balanced_accuracy", "malignancy_auc", "ece")}
        plot_calibration({"as trained": raw, "calibrated": test_probs}, y_all[idx_test], run_dir / "eval",
                         f"{info.name}: test split")
    if decision:
        plain = evaluate_probs(test_probs, y_all[idx_test], dataclasses.replace(info, decision=None))
        extra["without_decision_step"] = {k: plain[k] for k in ("top1", "top3", "balanced_accuracy")}
    # intervals resample the split's own unit (lesion, patient), not single photos
    report = evaluate_probs(test_probs, y_all[idx_test], info, out_dir=run_dir / "eval",
                            title=f"{info.name} (Keras float, test split)", extra=extra,
                            groups=dataset.groups_array()[idx_test])
    save_test_outputs(run_dir, test_probs, y_all[idx_test], dataset.groups_array()[idx_test])  # for pooling folds
    return TrainResult(run_dir, model, info, report)
