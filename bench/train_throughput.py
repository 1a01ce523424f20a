"""Triplet-training throughput on Ray Train: 1 worker vs 2 workers on the same global batch.

Both runs take the same P x K global batch per step, the same model and the same step as
``streamproc.training`` (augment, preprocess, embed the shard, all-gather, semi-hard mining on the
global batch, loss scaled for DDP, backward, AdaGrad). ``1 worker`` gets all the CPUs as torch
threads; ``2 workers`` get half each and DDP over gloo. Crops are random pixels of the model's input
size: the cost of a step does not depend on what the faces show. images/s = steps x P x K / wall
time of the timed steps (after warm-up steps), measured on rank 0.

    python bench/train_throughput.py --arch nns2 --steps 20 --json out/train_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, cast

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads cost a lot on shared cores

import numpy as np


def _worker(config: dict[str, Any]) -> dict[str, float]:
    import ray.train
    import ray.train.torch
    import torch

    from streamproc.models.architectures import build
    from streamproc.models.checkpoint import ModelCard
    from streamproc.models.embedder import preprocess
    from streamproc.training.config import AugmentConfig
    from streamproc.training.data import PKSampler, augment
    from streamproc.training.distributed import rank_and_world_size
    from streamproc.training.loop import train_step, trainable_parameters
    from streamproc.training.losses import TripletLoss
    from streamproc.training.miners import SemiHardMiner

    rank, world = rank_and_world_size()
    torch.set_num_threads(config["threads"])
    torch.manual_seed(0)
    module = build(config["arch"], 128)
    params = trainable_parameters(module, config["freeze_trunk"])
    model = ray.train.torch.prepare_model(module)
    model.train(not config["freeze_trunk"])
    optimizer = torch.optim.Adagrad(params, lr=0.05)
    size = int(config["input_size"])
    card = ModelCard(name="bench", version="b", arch=config["arch"], embedding_dim=128, input_size=size)
    p, k = config["p"], config["k"]
    labels = np.repeat(np.arange(4 * p), 8)
    crops = np.random.default_rng(0).integers(0, 256, size=(len(labels), size, size, 3), dtype=np.uint8)
    sampler = PKSampler(labels, p, k, seed=0)
    miner, loss_fn, aug = SemiHardMiner(0.2), TripletLoss(0.2), AugmentConfig()
    started = 0.0
    for step in range(config["warmup"] + config["steps"]):
        if step == config["warmup"]:
            started = time.perf_counter()
        batch = sampler.global_batch(step)
        positions = sampler.shard(np.arange(len(batch)), rank, world)
        inputs = preprocess(augment(crops[batch[positions]], positions, step, 0, aug), card)
        train_step(model, optimizer, inputs, torch.from_numpy(labels[batch[positions]]), miner, loss_fn)
    seconds = time.perf_counter() - started
    ray.train.report({"seconds": seconds})
    return {"seconds": seconds, "images_per_second": config["steps"] * p * k / seconds}


def run(workers: int, args: argparse.Namespace, cpus: int) -> dict[str, float]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from streamproc.models.architectures import ARCHITECTURES

    config = {
        "arch": args.arch,
        "input_size": ARCHITECTURES[args.arch].input_size,
        "freeze_trunk": args.freeze_trunk,
        "p": args.p,
        "k": args.k,
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": cpus // workers,
    }
    trainer = TorchTrainer(
        _worker,  # type: ignore[arg-type]  # returns its timing (Result.return_value)
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": cpus // workers}),
        run_config=RunConfig(name=f"train-throughput-{workers}-{time.time_ns()}", storage_path=args.storage),
    )
    result = trainer.fit()
    if result.error is not None:
        raise SystemExit(f"{workers} worker(s) failed: {result.error}")
    return dict(cast(Any, result).return_value)  # Ray Train V2 Result; the stubs are V1's


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--arch", default="nns2", help="architecture (default nns2)")
    parser.add_argument("--freeze-trunk", action="store_true", help="train only the head, model in eval mode")
    parser.add_argument("--p", type=int, default=16, help="identities per global batch")
    parser.add_argument("--k", type=int, default=4, help="images per identity")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument(
        "--cpus", type=int, default=2, help="CPUs of the local Ray cluster, split among workers"
    )
    parser.add_argument(
        "--storage", default=str(Path("out/bench/ray").resolve()), help="Ray Train storage folder"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=False, object_store_memory=200 * 2**20)
    try:
        one = run(1, args, args.cpus)
        two = run(2, args, args.cpus)
    finally:
        ray.shutdown()
    batch = args.p * args.k
    print(f"arch {args.arch}  global batch {args.p}x{args.k}={batch}  {args.steps} steps  {args.cpus} CPUs")
    print(f"1 worker : {one['images_per_second']:.1f} images/s")
    print(f"2 workers: {two['images_per_second']:.1f} images/s")
    ratio = two["images_per_second"] / one["images_per_second"]
    print(f"ratio 2/1: {ratio:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "arch": args.arch,
            "freeze_trunk": args.freeze_trunk,
            "global_batch": batch,
            "steps": args.steps,
            "cpus": args.cpus,
            "one_worker_images_per_second": one["images_per_second"],
            "two_workers_images_per_second": two["images_per_second"],
            "ratio": ratio,
        }
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
