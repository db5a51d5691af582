"""Fine-tuning throughput (training images per second) for 1, 2, ... local workers, and
on one GPU with and without mixed precision where a GPU exists.

    python -m mobile_derm.training.throughput --workers 1 2 --out runs/throughput
    python -m mobile_derm.training.throughput --input-only --input-size 160 --batch-size 32 --out runs/input_speed

Each measurement runs the fine-tuning step of ``mobile_derm.training.fit`` (the same
model, input pipeline, optimizer and strategy) on generated pixels in fresh processes:
one worker is the default one-device path; N > 1 workers are N processes on this host
joined by ``TF_CONFIG`` (MultiWorkerMirroredStrategy), as on a cluster. The first epoch
(graph building) is not timed. Writes throughput.json and throughput.md to ``--out``;
the figures of record are in docs/distributed.md. ``--input-only`` times the input
pipeline alone, from the pixel cache and streamed from TFRecord shards.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from mobile_derm.io_utils import atomic_write_text

WORKER_TIMEOUT_S = 900
NO_GPU = "skipped: no GPU"
GPU_SETTINGS = {False: "1 GPU, float32", True: "1 GPU, mixed precision"}


def free_ports(n: int) -> list[int]:
    """``n`` free TCP ports on 127.0.0.1 (bound to port 0, then released) for a local cluster."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def measure_worker(args) -> None:
    """One worker's part: time the fine-tuning epochs after the first; the chief writes the figure."""
    from mobile_derm.training.distribute import Distribution, build_model, is_chief, strategy_for, workers

    distribution = Distribution("multi_worker" if os.environ.get("TF_CONFIG") else "none",
                                mixed_precision=args.mixed_precision)
    strategy = strategy_for(distribution.strategy)
    import numpy as np

    from mobile_derm.tf_setup import keras
    from mobile_derm.training.config import TrainConfig
    from mobile_derm.training.fit import _smoothed_loss
    from mobile_derm.training.pipeline import steps_per_epoch, training_dataset

    config = TrainConfig(input_size=args.input_size, batch_size=args.batch_size, weights=None)
    n_classes = 6
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (args.images, args.input_size, args.input_size, 3), dtype=np.uint8)
    labels = rng.integers(0, n_classes, args.images)
    weights = np.ones(args.images, np.float32)
    replicas = 1 if strategy is None else strategy.num_replicas_in_sync
    steps = steps_per_epoch(args.images, args.batch_size, workers(strategy), drop_remainder=replicas > 1)
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = build_model(distribution, config, n_classes)
        model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss=_smoothed_loss(0.1, n_classes))

    def train_input(input_context=None):
        return training_dataset(pixels, labels, weights, config.spec.mean, config.spec.std, args.batch_size, 0,
                                args.epochs, input_context)

    data = train_input() if strategy is None else strategy.distribute_datasets_from_function(train_input)

    class EpochTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.start)

    timer = EpochTimes()
    model.fit(data, epochs=args.epochs, steps_per_epoch=steps, callbacks=[timer], verbose=0)
    timed = timer.times[1:]  # the first epoch builds the graph
    images = steps * (args.batch_size // workers(strategy)) * workers(strategy) * len(timed)
    if is_chief(strategy):
        atomic_write_text(args.result, json.dumps({"images_per_second": images / sum(timed), "steps_per_epoch": steps,
                                                   "timed_epochs": len(timed)}))


def _run_workers(n: int, out: Path, settings: list[str], tag: str, env_extra: dict | None = None) -> dict:
    """Start ``n`` worker processes (TF_CONFIG when n > 1), wait (bounded), kill what is left."""
    result = out / f"{tag}.json"
    result.unlink(missing_ok=True)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(n)]}
    procs = []
    for index in range(n):
        env = {**os.environ, **(env_extra or {})}
        env.pop("TF_CONFIG", None)
        if n > 1:
            env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        command = [sys.executable, "-m", "mobile_derm.training.throughput", "--worker", "--result", str(result), *settings]
        with open(out / f"{tag}_worker{index}.log", "w") as log:
            procs.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    deadline = time.time() + WORKER_TIMEOUT_S
    try:
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    if not result.is_file():
        return {"error": f"no result: see {out / (tag + '_worker0.log')}"}
    return json.loads(result.read_text())


def gpu_rows(out: Path, settings: list[str]) -> list[dict]:
    """One GPU in float32 and with mixed precision; where TensorFlow sees no GPU, both rows
    say ``NO_GPU`` and one line says so."""
    from mobile_derm.tf_setup import tf

    if not tf.config.list_physical_devices("GPU"):
        print(f"{NO_GPU}: TensorFlow sees none on this machine, so the rows {' and '.join(GPU_SETTINGS.values())} "
              "are not measured")
        return [{"setting": setting, "note": NO_GPU} for setting in GPU_SETTINGS.values()]
    return [{"setting": setting, **_run_workers(1, out, settings + (["--mixed-precision"] if mixed else []),
                                                f"gpu_mixed_{mixed}")}
            for mixed, setting in GPU_SETTINGS.items()]


def input_throughput(out: Path, size: int, batch_size: int, epochs: int = 3) -> list[dict]:
    """The fine-tuning input pipeline alone (no model): images per second from the pixel cache
    and streamed from TFRecord shards, on 600 generated 200 px JPEGs (written under ``out``)."""
    import numpy as np

    from mobile_derm.datasets.shards import read_shards, write_shards
    from mobile_derm.datasets.sources import load
    from mobile_derm.datasets.synthetic import generate_demo_dataset
    from mobile_derm.training.pipeline import training_dataset
    from mobile_derm.training.runs import training_images

    if not (out / "data" / "labels.csv").is_file():
        generate_demo_dataset(out / "data", lesions_per_class=20, views_per_lesion=5, size=200)
    source = load(out / "data" / "labels.csv")
    if not (out / "shards" / "manifest.json").is_file():
        write_shards(source, out / "shards", images_per_shard=100, progress=False)
    rows = []
    for setting, data in (("input only, pixel cache", source), ("input only, TFRecord shards", read_shards(out / "shards"))):
        images = training_images(data, size, out / "cache", progress=False)
        stream = training_dataset(images, np.zeros(len(images), np.int64), np.ones(len(images), np.float32),
                                  [0.0] * 3, [1.0] * 3, batch_size, 0, epochs)
        count, start = 0, None
        for step, (batch, _, _) in enumerate(stream):
            if step == 5:  # the first batches (start-up, the cache's .npy load) are not timed
                count, start = 0, time.perf_counter()
            count += len(batch)
        rows.append({"setting": setting, "images_per_second": count / (time.perf_counter() - start)})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="local worker counts to measure")
    parser.add_argument("--out", help="folder for throughput.json/.md and the workers' logs")
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch")
    parser.add_argument("--images", type=int, default=128, help="generated training images per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs (the first is not timed)")
    parser.add_argument("--input-only", action="store_true",
                        help="measure the input pipeline alone: pixel cache vs TFRecord shards (600 generated photos)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mixed-precision", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        measure_worker(args)
        return 0
    if not args.out:
        parser.error("--out is required")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = ["--input-size", str(args.input_size), "--batch-size", str(args.batch_size),
                "--images", str(args.images), "--epochs", str(args.epochs)]
    if args.input_only:
        rows = input_throughput(out, args.input_size, args.batch_size, args.epochs)
        atomic_write_text(out / "input_throughput.json", json.dumps(rows, indent=2))
        print("\n".join(f"{row['setting']}: {row['images_per_second']:.0f} images/s" for row in rows))
        return 0
    rows = []
    cpu_only = {"CUDA_VISIBLE_DEVICES": "-1"}  # the worker lines measure CPU workers even on a GPU host
    for n in args.workers:
        figure = _run_workers(n, out, settings, f"cpu_{n}_workers", cpu_only)
        rows.append({"setting": f"CPU, {n} local worker{'s' if n > 1 else ''}", **figure})
    rows += gpu_rows(out, settings)
    record = {"input_size": args.input_size, "global_batch": args.batch_size, "images": args.images,
              "cpu_cores": os.cpu_count(), "rows": rows}
    atomic_write_text(out / "throughput.json", json.dumps(record, indent=2))
    lines = [f"Fine-tuning throughput, EfficientNet-Lite0 at {args.input_size} px, global batch {args.batch_size}, "
             f"{os.cpu_count()} CPU cores", "", "| setting | images/s |", "|---|---|"]
    for row in rows:
        value = f"{row['images_per_second']:.1f}" if "images_per_second" in row else row.get("note") or row.get("error")
        lines.append(f"| {row['setting']} | {value} |")
    table = "\n".join(lines) + "\n"
    atomic_write_text(out / "throughput.md", table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
