"""The same global batch through 1 and through 2 Ray Train workers gives the same loss and step.

A small MLP over fixed features (no BatchNorm, no dropout) keeps it fast. Each worker runs one
``train_step`` per miner from the same initial weights on its shard of one fixed, shuffled global
batch (so positives and negatives of a triplet live on different workers), and returns the loss and
the parameters after the optimizer step.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from streamproc.training.distributed import rank_and_world_size
from streamproc.training.loop import train_step
from streamproc.training.losses import TripletLoss
from streamproc.training.miners import build_miner

pytestmark = pytest.mark.integration

P, K, FEATURES, DIM = 4, 4, 12, 8
MINERS = ("semi-hard", "hardest", "random")


class TinyEmbedder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(FEATURES, 32), nn.Tanh(), nn.Linear(32, DIM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.net(x), dim=1)


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    labels = torch.arange(P).repeat_interleave(K)
    centres = torch.randn(P, FEATURES, generator=g)
    features = centres[labels] + 0.8 * torch.randn(P * K, FEATURES, generator=g)
    order = torch.randperm(P * K, generator=g)
    return features[order], labels[order]


def one_step_per_miner(config: dict[str, Any]) -> dict[str, Any]:
    """Runs on each worker (or in-process with world size 1 and no process group)."""
    rank, world = rank_and_world_size()
    features, labels = global_batch()
    rows = slice(rank * len(labels) // world, (rank + 1) * len(labels) // world)
    out: dict[str, Any] = {"world": world}
    for kind in MINERS:
        torch.manual_seed(0)
        module = TinyEmbedder().double()
        model = module
        if config["ray"]:
            import ray.train.torch

            model = ray.train.torch.prepare_model(module)
        optimizer = torch.optim.SGD(module.parameters(), lr=0.5)
        miner = build_miner(kind, margin=0.2, seed=3)
        result = train_step(model, optimizer, features[rows].double(), labels[rows], miner, TripletLoss(0.2))
        out[kind] = {
            "loss": result.loss,
            "triplets": result.stats.triplets,
            "params": [p.detach().cpu().numpy().copy() for p in module.parameters()],
        }
    if config["ray"]:
        import ray.train

        ray.train.report({"loss": out["semi-hard"]["loss"]})
    return out


def run_on_ray(num_workers: int) -> dict[str, Any]:
    from ray import cloudpickle
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests
    trainer = TorchTrainer(
        one_step_per_miner,
        train_loop_config={"ray": True},
        scaling_config=ScalingConfig(num_workers=num_workers, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=f"equivalence-{num_workers}"),
    )
    result = trainer.fit()
    assert result.error is None
    return dict(result.return_value)


@pytest.fixture(scope="module")
def runs(ray_cluster: None) -> dict[int, dict[str, Any]]:
    return {0: one_step_per_miner({"ray": False}), 1: run_on_ray(1), 2: run_on_ray(2)}


@pytest.mark.parametrize("kind", MINERS)
def test_same_loss_and_same_step_on_one_and_two_workers(runs: dict[int, dict[str, Any]], kind: str) -> None:
    local, one, two = (runs[n][kind] for n in (0, 1, 2))
    assert runs[2]["world"] == 2 and runs[1]["world"] == 1
    assert local["triplets"] == two["triplets"] == P * K * (K - 1)
    assert two["loss"] == pytest.approx(local["loss"], abs=1e-12)
    assert one["loss"] == pytest.approx(local["loss"], abs=1e-12)
    initial = one_step_per_miner_initial()
    moved = max(float(np.abs(a - b).max()) for a, b in zip(local["params"], initial, strict=True))
    assert moved > 1e-3, "the step must actually move the parameters"
    for a, b, c in zip(local["params"], one["params"], two["params"], strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)
        np.testing.assert_allclose(c, a, rtol=0, atol=1e-10)


def one_step_per_miner_initial() -> list[np.ndarray]:
    torch.manual_seed(0)
    return [p.detach().numpy().copy() for p in TinyEmbedder().double().parameters()]


def test_unscaled_loss_would_halve_the_step(runs: dict[int, dict[str, Any]]) -> None:
    """Sanity check of the scaling argument: the two-worker step equals the full one, not half of it."""
    initial = one_step_per_miner_initial()
    full = [p - q for p, q in zip(runs[0]["semi-hard"]["params"], initial, strict=True)]
    two = [p - q for p, q in zip(runs[2]["semi-hard"]["params"], initial, strict=True)]
    ratio = sum(float((a * b).sum()) for a, b in zip(two, full, strict=True)) / sum(
        float((a * a).sum()) for a in full
    )
    assert ratio == pytest.approx(1.0, abs=1e-8)
