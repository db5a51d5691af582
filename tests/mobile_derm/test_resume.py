"""Resuming a killed fine-tune (mobile_derm.training.resume): early stopping as if uninterrupted."""
import json

import numpy as np

from mobile_derm.tf_setup import keras
from mobile_derm.training.resume import STATE_FILE, ResumableEarlyStopping, epochs_done

VAL_LOSSES = [1.0, 0.5, 0.8, 0.9, 0.7, 0.6]  # best at epoch 1; patience 3 stops after epoch 4


def _model():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.stop_training = False
    return model


def _epochs(stopper, model, epochs):
    """What ``fit`` does with the callback: each epoch's weights (epoch e: all e), then its logs."""
    stopped = None
    for epoch in epochs:
        model.set_weights([np.full(w.shape, float(epoch), np.float32) for w in model.get_weights()])
        stopper.on_epoch_end(epoch, {"loss": 2.0 - epoch / 10, "val_loss": VAL_LOSSES[epoch]})
        if model.stop_training:
            stopped = epoch
            break
    stopper.on_train_end()
    return stopped


def test_a_resumed_early_stopping_stops_and_restores_as_an_uninterrupted_one(tmp_path):
    whole_model = _model()
    whole = ResumableEarlyStopping(tmp_path / "whole", 0, patience=3)
    whole.set_model(whole_model)
    whole.on_train_begin()
    whole_stop = _epochs(whole, whole_model, range(6))

    state, model = tmp_path / "killed", _model()
    first = ResumableEarlyStopping(state, 0, patience=3)
    first.set_model(model)
    first.on_train_begin()
    _epochs(first, model, range(3))  # "killed" after epoch 2 (3 epochs in the backup)
    model = _model()  # a fresh process
    second = ResumableEarlyStopping(state, 3, patience=3)
    second.set_model(model)
    second.on_train_begin()
    resumed_stop = _epochs(second, model, range(3, 6))

    assert whole_stop == resumed_stop == 4
    for got, want in zip(model.get_weights(), whole_model.get_weights()):
        np.testing.assert_array_equal(got, want)
        assert np.all(got == 1.0)  # the best epoch's, from before the kill
    assert second.history == whole.history
    assert second.history["val_loss"] == VAL_LOSSES[:5]
    # only the weights the kept states name stay on disk
    assert sorted(p.name for p in state.glob("best_weights-*.npz")) == ["best_weights-1.npz"]


def test_a_worker_that_does_not_write_leaves_no_state(tmp_path):
    model = _model()
    worker = ResumableEarlyStopping(tmp_path / "state", 0, write=False, patience=3)
    worker.set_model(model)
    worker.on_train_begin()
    _epochs(worker, model, range(2))
    assert not (tmp_path / "state").exists() and len(worker.history["val_loss"]) == 2


def test_no_backup_means_epoch_zero(tmp_path):
    assert epochs_done(tmp_path / "backup") == 0


def test_a_backup_without_early_stopping_state_resumes_with_early_stopping_afresh(tmp_path, capsys):
    """A backup written before this state was kept (or without it): the run goes on, comparing
    only the epochs after the resume, and says so."""
    model = _model()
    stopper = ResumableEarlyStopping(tmp_path / "none", 3, patience=3)
    stopper.set_model(model)
    stopper.on_train_begin()
    assert "no early-stopping state saved" in capsys.readouterr().out
    _epochs(stopper, model, range(3, 5))
    assert stopper.history["val_loss"] == VAL_LOSSES[3:5] and stopper.best_epoch == 4


def test_the_state_each_epoch_keeps_is_that_epoch_s_after_a_resume(tmp_path):
    """The kept state of the epoch a run resumed from does not grow with the epochs after it."""
    model = _model()
    first = ResumableEarlyStopping(tmp_path, 0, patience=3)
    first.set_model(model)
    first.on_train_begin()
    _epochs(first, model, range(3))
    second = ResumableEarlyStopping(tmp_path, 3, patience=3)
    second.set_model(model)
    second.on_train_begin()
    _epochs(second, model, range(3, 4))
    states = json.loads((tmp_path / STATE_FILE).read_text())
    assert [len(states[k]["history"]["val_loss"]) for k in ("2", "3")] == [3, 4]
