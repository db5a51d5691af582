"""Fine-tuning on several devices or machines with TensorFlow's own engine (tf.distribute).

``Distribution`` says where and how a run's fine-tuning computes (strategy, batch rule,
mixed precision, XLA); it is not part of the recipe (TrainConfig):
the same recipe gives the same figures within noise on one CPU, a GPU box or a
cluster (docs/distributed.md). The choices:

- "none": one device, one process (the default; exactly the path without this module).
- "mirrored": every local GPU (or the CPU when there is none), ``MirroredStrategy``.
- "multi_worker": ``MultiWorkerMirroredStrategy`` over the hosts named in ``TF_CONFIG``;
  the same command runs on every host. TensorFlow requires this strategy to exist
  before it runs anything, so ``strategy_for`` is called first thing in a process
  (``mobile-derm train`` does; ``fit.train`` does too, before any TensorFlow work).

What is distributed: stage 2 (end-to-end fine-tuning), the stage that costs. Stage 1
(the softmax head on cached features) and the evaluation run on the chief alone,
which also writes every file of the run folder; the other workers receive the chief's
weights before fine-tuning (``copy_chief_weights``) and stop after it.

The batch rule (``batch_rule``), fixed here and recorded in history.json:
- "global" (default): ``TrainConfig.batch_size`` is the global batch, split across the
  replicas, and the learning rate is the recipe's: the same arithmetic as one device.
- "per_replica": ``batch_size`` is each replica's batch (a GPU's memory), the global
  batch is ``batch_size x replicas`` and the fine-tuning learning rate is multiplied by
  the number of replicas (the linear scaling rule of Goyal et al. 2017, with the
  recipe's warmup).

``mixed_precision`` (float16 compute, float32 weights and softmax, with Keras' loss
scaling) and ``jit_compile`` (XLA) speed up fine-tuning on a GPU; on a CPU both run
(the tests use them there) but do not pay: float16 is emulated. Measured: docs/distributed.md.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from mobile_derm.errors import ConfigError

STRATEGIES = ("none", "mirrored", "multi_worker")
BATCH_RULES = ("global", "per_replica")

_created: dict = {}  # one strategy object per process (TensorFlow allows one multi-worker set-up)


@dataclass(frozen=True)
class Distribution:
    strategy: str = "none"
    batch_rule: str = "global"
    mixed_precision: bool = False
    jit_compile: bool = False

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ConfigError(None, f"distribution strategy must be one of {', '.join(STRATEGIES)}, not {self.strategy!r}")
        if self.batch_rule not in BATCH_RULES:
            raise ConfigError(None, f"batch rule must be one of {', '.join(BATCH_RULES)}, not {self.batch_rule!r}")


def strategy_for(name: str):
    """The tf.distribute strategy for ``name`` (None for "none"), created once per process."""
    if name == "none":
        return None
    if name not in _created:
        from mobile_derm.tf_setup import tf

        if name == "multi_worker":
            if not os.environ.get("TF_CONFIG"):
                raise ConfigError(None, "the multi_worker strategy needs TF_CONFIG naming the cluster and this "
                                        "worker's task (docs/distributed.md)")
            try:
                json.loads(os.environ["TF_CONFIG"])
            except ValueError as exc:
                raise ConfigError(None, f"TF_CONFIG is not JSON: {exc}") from None
            try:
                _created[name] = tf.distribute.MultiWorkerMirroredStrategy()
            except RuntimeError as exc:  # "Collective ops must be configured at program startup"
                raise ConfigError(None, f"the multi_worker strategy must be created before TensorFlow runs "
                                        f"anything in this process ({exc})") from None
        else:
            _created[name] = tf.distribute.MirroredStrategy()
    return _created[name]


def is_chief(strategy) -> bool:
    """True in a one-process run and on the chief (the worker that writes the run folder)."""
    return strategy is None or bool(strategy.extended.should_checkpoint)


def local_replicas(strategy) -> int:
    return 1 if strategy is None else len(strategy.extended.worker_devices)


def workers(strategy) -> int:
    """Processes taking part (one input pipeline each)."""
    return 1 if strategy is None else strategy.num_replicas_in_sync // local_replicas(strategy)


def scaled_batch_and_rate(batch_size: int, learning_rate: float, replicas: int, rule: str) -> tuple[int, float]:
    """The global batch and fine-tuning learning rate under ``rule`` (see the module's docstring)."""
    if rule == "per_replica":
        return batch_size * replicas, learning_rate * replicas
    if batch_size % replicas:
        raise ConfigError(None, f"batch_size {batch_size} does not split evenly over {replicas} replicas "
                                f"(use a multiple of {replicas}, or the per_replica batch rule)")
    return batch_size, learning_rate


def build_model(distribution: Distribution, config, n_classes: int):
    """A fresh classifier for fine-tuning (the caller copies the weights in), in the
    distribution's precision: Keras takes the policy when a layer is made and wraps the
    optimizer in loss scaling at compile time; the policy is set back so that every
    other model stays float32. Call it inside the strategy's scope."""
    import dataclasses

    from mobile_derm.model.classifier import build_classifier
    from mobile_derm.tf_setup import keras

    without_weights = dataclasses.replace(config, weights=None)  # random init: the weights are copied in
    if not distribution.mixed_precision:
        return build_classifier(without_weights, n_classes)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        return build_classifier(without_weights, n_classes)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def chief_decides(strategy, value: bool) -> bool:
    """The chief's ``value`` on every worker (which stage to run is read from the chief's
    run folder; the others must take the same branch or the collectives would wait forever)."""
    if strategy is None or workers(strategy) == 1:
        return value
    from mobile_derm.tf_setup import tf

    mine = tf.constant(float(value) if is_chief(strategy) else 0.0)
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(mine)), axis=None)
    # every local replica of the chief contributed the value once
    return bool(total.numpy() > 0)


def copy_chief_weights(strategy, model) -> None:
    """Make every worker's variables the chief's: a sum over replicas where only the
    chief's first replica contributes (other workers built their model without stage 1)."""
    if strategy is None or workers(strategy) == 1:
        return
    from mobile_derm.tf_setup import tf

    def chiefs(variables):
        # global replica 0 is the chief's first device
        context = tf.distribute.get_replica_context()
        first = tf.equal(context.replica_id_in_sync_group, 0)
        return [context.all_reduce(tf.distribute.ReduceOp.SUM, tf.where(first, v, tf.zeros_like(v))) for v in variables]

    values = strategy.run(tf.function(chiefs), args=([v.value() for v in model.weights],))
    for variable, value in zip(model.weights, values):
        variable.assign(strategy.experimental_local_results(value)[0])
