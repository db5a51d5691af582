"""Resuming a killed fine-tune where it stopped.

Keras' ``BackupAndRestore`` saves the weights, the optimizer and the epoch count after every
epoch, but not the rest of the run's state: the input stream would start again at epoch 0's
order, and early stopping would forget its best epoch (whose weights it restores at the end)
and the epochs before the kill. Here the stream starts at the first epoch not done
(``epochs_done``, read from the backup itself, so both always agree), and
``ResumableEarlyStopping`` keeps its state, the best weights and the history on disk.

What a resumed run still does differently: dropout and stochastic-depth masks come from
Keras' stateful random ops, whose position is not in the backup, so the masks after a resume
are not those an uninterrupted run would draw (docs/decisions.md, "Resuming").
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mobile_derm.io_utils import atomic_path, atomic_write_text
from mobile_derm.tf_setup import keras, tf

BACKUP_DIR = "backup"  # in the run folder: BackupAndRestore's checkpoints and this module's state
STATE_DIR = "early_stopping"  # in the backup folder: ResumableEarlyStopping's state
STATE_FILE = "early_stopping.json"
# BackupAndRestore's record of the last epoch it saved (tf_keras WorkerTrainingState)
_SAVED_EPOCH = "ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"


def epochs_done(backup_dir: str | Path) -> int:
    """Fine-tuning epochs the BackupAndRestore state in ``backup_dir`` holds: the epoch a
    resumed ``fit`` starts at (0 when there is none). Every worker reads the chief's copy,
    as BackupAndRestore does."""
    latest = tf.train.latest_checkpoint(str(Path(backup_dir) / "chief"))
    if latest is None:
        return 0
    return int(tf.train.load_variable(latest, _SAVED_EPOCH)) + 1


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """``EarlyStopping(restore_best_weights=True)`` whose state survives a kill.

    After every epoch (before BackupAndRestore saves that epoch: listed first) it writes its
    best value, wait count and best epoch, the history so far and, when the epoch improved,
    the best weights into ``state_dir``; the last two epochs' states are kept, so whichever
    epoch the backup holds, its state is there. A fit that resumes at epoch ``start_epoch``
    starts from that state. ``history`` is every epoch's logs, before the kill and after.
    Only ``write`` (the chief) writes; every worker reads."""

    def __init__(self, state_dir: str | Path, start_epoch: int, write: bool = True, **kwargs):
        super().__init__(restore_best_weights=True, **kwargs)
        self.state_dir, self.start_epoch, self.write = Path(state_dir), int(start_epoch), write
        self.history: dict[str, list[float]] = {}
        self._states: dict[str, dict] = {}

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.history, self._states = {}, {}
        if self.start_epoch == 0:
            return
        state_file = self.state_dir / STATE_FILE
        saved = json.loads(state_file.read_text()) if state_file.is_file() else {}
        state = saved.get(str(self.start_epoch - 1))
        if state is None:  # a backup from before this state was kept: start early stopping afresh
            print(f"resuming at fine-tuning epoch {self.start_epoch + 1}: no early-stopping state saved for it, "
                  "the epochs before are not compared")
            return
        self._states = {str(self.start_epoch - 1): state}
        self.best, self.wait, self.best_epoch = state["best"], state["wait"], state["best_epoch"]
        # a copy: the kept state of epoch start_epoch - 1 must not grow with the epochs after it
        self.history = {k: list(v) for k, v in state["history"].items()}
        with np.load(self.state_dir / state["best_weights"]) as stored:
            self.best_weights = [stored[f"w{i}"] for i in range(len(stored.files))]

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        if not self.write:
            return
        weights_file = f"best_weights-{self.best_epoch}.npz"
        if self.best_epoch == epoch:
            with atomic_path(self.state_dir / weights_file) as tmp:
                with open(tmp, "wb") as handle:
                    np.savez(handle, **{f"w{i}": w for i, w in enumerate(self.best_weights)})
        self._states[str(epoch)] = {"best": float(self.best), "wait": int(self.wait), "best_epoch": int(self.best_epoch),
                                    "best_weights": weights_file,
                                    "history": {key: list(values) for key, values in self.history.items()}}
        self._states = dict(list(self._states.items())[-2:])
        atomic_write_text(self.state_dir / STATE_FILE, json.dumps(self._states))
        kept = {state["best_weights"] for state in self._states.values()}
        for stale in self.state_dir.glob("best_weights-*.npz"):
            if stale.name not in kept:
                stale.unlink(missing_ok=True)
