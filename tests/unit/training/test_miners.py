"""Miners against brute-force enumeration of every triplet over hand-placed embeddings."""

from __future__ import annotations

import itertools

import pytest
import torch

from streamproc.training.miners import (
    HardestMiner,
    Miner,
    RandomNegativeMiner,
    SemiHardMiner,
    Triplets,
    all_positive_pairs,
    build_miner,
)

MARGIN = 0.2


def make_batch(points: list[tuple[float, float]], labels: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(points, dtype=torch.float64), torch.tensor(labels)


# Two identities on a line plus one off it; all pairwise distances distinct (no ties).
LINE = make_batch(
    [(0.0, 0.0), (0.3, 0.0), (0.45, 0.0), (0.7, 0.0), (1.5, 0.0), (0.2, 0.9)], [0, 0, 1, 1, 0, 2]
)
# Identity 0 spread out, identity 1 in between: some pairs have only hard negatives.
SPREAD = make_batch(
    [(0.0, 0.0), (1.0, 0.0), (0.45, 0.05), (0.52, -0.04), (3.0, 3.0), (3.1, 3.0)], [0, 0, 1, 1, 2, 2]
)
# Well separated clusters: every negative beyond the margin (no semi-hard, no hard).
EASY = make_batch([(0.0, 0.0), (0.1, 0.0), (5.0, 0.0), (5.1, 0.0)], [0, 0, 1, 1])
BATCHES = {"line": LINE, "spread": SPREAD, "easy": EASY}


def brute_triplets(emb: torch.Tensor, labels: torch.Tensor) -> list[tuple[int, int, int, float, float]]:
    """Every valid (a, p, n) with d(a,p) and d(a,n), by plain loops."""
    n = len(labels)
    out = []
    for a, p, neg in itertools.product(range(n), repeat=3):
        if a != p and labels[a] == labels[p] and labels[a] != labels[neg]:
            d = [float(((emb[a] - emb[i]) ** 2).sum()) for i in (p, neg)]
            out.append((a, p, neg, d[0], d[1]))
    return out


def by_pair(emb: torch.Tensor, labels: torch.Tensor) -> dict[tuple[int, int], list[tuple[int, float, float]]]:
    pairs: dict[tuple[int, int], list[tuple[int, float, float]]] = {}
    for a, p, neg, d_ap, d_an in brute_triplets(emb, labels):
        pairs.setdefault((a, p), []).append((neg, d_ap, d_an))
    return pairs


def expected_semi_hard(emb: torch.Tensor, labels: torch.Tensor) -> dict[tuple[int, int], int]:
    out = {}
    for pair, options in by_pair(emb, labels).items():
        farther = [(d_an, neg) for neg, d_ap, d_an in options if d_an > d_ap]
        out[pair] = min(farther)[1] if farther else max((d_an, -neg) for neg, _, d_an in options)[1] * -1
    return out


def expected_hardest(emb: torch.Tensor, labels: torch.Tensor) -> dict[tuple[int, int], int]:
    return {
        pair: min((d_an, neg) for neg, _, d_an in options)[1]
        for pair, options in by_pair(emb, labels).items()
    }


def as_dict(triplets: Triplets) -> dict[tuple[int, int], int]:
    a, p, n = (t.tolist() for t in triplets)
    assert len(set(zip(a, p, strict=True))) == len(a), "each anchor-positive pair once"
    return {(i, j): k for i, j, k in zip(a, p, n, strict=True)}


@pytest.mark.parametrize("name", BATCHES)
def test_every_anchor_positive_pair_is_used(name: str) -> None:
    emb, labels = BATCHES[name]
    pairs = set(by_pair(emb, labels))
    for miner in (SemiHardMiner(MARGIN), HardestMiner(), RandomNegativeMiner(seed=1)):
        assert set(as_dict(miner(emb, labels))) == pairs


@pytest.mark.parametrize("name", BATCHES)
def test_semi_hard_matches_brute_force(name: str) -> None:
    emb, labels = BATCHES[name]
    assert as_dict(SemiHardMiner(MARGIN)(emb, labels)) == expected_semi_hard(emb, labels)


@pytest.mark.parametrize("name", BATCHES)
def test_hardest_matches_brute_force(name: str) -> None:
    emb, labels = BATCHES[name]
    assert as_dict(HardestMiner()(emb, labels)) == expected_hardest(emb, labels)


def test_semi_hard_negative_lies_inside_the_margin_whenever_one_exists() -> None:
    emb, labels = LINE
    chosen = as_dict(SemiHardMiner(MARGIN)(emb, labels))
    n_semi = 0
    for pair, options in by_pair(emb, labels).items():
        semi = {neg: d_an for neg, d_ap, d_an in options if d_ap < d_an < d_ap + MARGIN}
        if semi:
            n_semi += 1
            assert chosen[pair] == min(semi, key=semi.__getitem__)  # the closest semi-hard one
    assert n_semi >= 3  # the fixture does exercise the semi-hard case


def test_no_semi_hard_negative_falls_back_as_documented() -> None:
    # SPREAD, pair (0, 1): d(a,p) = 1.0; identity 1 at 0.205 / 0.272 (hard), identity 2 at ~18 (far):
    # no semi-hard negative, so the closest negative farther than the positive (zero loss).
    emb, labels = SPREAD
    chosen = as_dict(SemiHardMiner(MARGIN)(emb, labels))
    assert chosen[(0, 1)] == 4
    # pair (2, 3): d(a,p) = 0.013; sample 0 at 0.205 is semi-hard (< 0.213) and is taken
    assert chosen[(2, 3)] == 0
    # pair (3, 2): d(a,p) = 0.013; the closest negative, 1 at 0.232, is beyond the margin: taken anyway
    assert chosen[(3, 2)] == 1
    # EASY: every negative is beyond the margin -> the closest farther negative
    emb, labels = EASY
    assert as_dict(SemiHardMiner(MARGIN)(emb, labels)) == {(0, 1): 2, (1, 0): 2, (2, 3): 1, (3, 2): 1}


def test_all_negatives_hard_takes_the_easiest_hard_one() -> None:
    # anchor 0, positive 1 far away; negatives 2 (0.04) and 3 (0.25) are both closer than the positive
    emb, labels = make_batch([(0.0, 0.0), (2.0, 0.0), (0.2, 0.0), (0.0, 0.5)], [0, 0, 1, 1])
    chosen = as_dict(SemiHardMiner(MARGIN)(emb, labels))
    assert chosen[(0, 1)] == 3
    assert chosen[(1, 0)] == 3  # d(1,2)=3.24, d(1,3)=4.25, d(1,0)=4: only 3 is farther -> 3


def test_random_negatives_are_negatives_and_seeded() -> None:
    emb, labels = LINE
    first = RandomNegativeMiner(seed=5)(emb, labels)
    again = RandomNegativeMiner(seed=5)(emb, labels)
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    assert bool((labels[first.anchor] != labels[first.negative]).all())
    seen = {n for _ in range(30) for n in RandomNegativeMiner(seed=_)(emb, labels).negative.tolist()}
    assert seen == {2, 3, 5, 0, 1, 4}  # every sample is somebody's negative


def test_mining_has_no_gradient_and_returns_long_tensors() -> None:
    emb = LINE[0].clone().requires_grad_(True)
    triplets = SemiHardMiner(MARGIN)(emb, LINE[1])
    assert all(t.dtype == torch.long and not t.requires_grad for t in triplets)


def test_one_identity_gives_no_triplets() -> None:
    emb, _ = EASY
    assert HardestMiner()(emb, torch.zeros(4, dtype=torch.long)).size == 0


def test_all_positive_pairs_are_ordered_pairs() -> None:
    a, p = all_positive_pairs(torch.tensor([0, 1, 0, 0]))
    assert sorted(zip(a.tolist(), p.tolist(), strict=True)) == [
        (0, 2),
        (0, 3),
        (2, 0),
        (2, 3),
        (3, 0),
        (3, 2),
    ]


@pytest.mark.parametrize(
    ("embeddings", "labels", "error"),
    [
        (torch.zeros(4), torch.zeros(4, dtype=torch.long), "embeddings"),
        (torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, dtype=torch.long), "embeddings"),
        (torch.zeros(4, 2), torch.zeros(3, dtype=torch.long), "labels"),
        (torch.zeros(4, 2), torch.zeros(4), "labels"),
    ],
)
def test_base_class_validates_inputs(embeddings: torch.Tensor, labels: torch.Tensor, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        HardestMiner()(embeddings, labels)


class _Broken(Miner):
    def __init__(self, triplets: Triplets) -> None:
        super().__init__()
        self.triplets = triplets

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor, dist: torch.Tensor) -> Triplets:
        return self.triplets


def _t(a: list[int], p: list[int], n: list[int]) -> Triplets:
    return Triplets(torch.tensor(a), torch.tensor(p), torch.tensor(n))


@pytest.mark.parametrize(
    ("triplets", "error"),
    [
        (_t([0], [0], [2]), "same label at other indices"),
        (_t([0], [2], [3]), "same label"),
        (_t([0], [1], [1]), "another label"),
        (_t([0], [1], [9]), "outside"),
        (Triplets(torch.tensor([0.0]), torch.tensor([1]), torch.tensor([2])), "int64"),
    ],
)
def test_base_class_checks_the_output(triplets: Triplets, error: str) -> None:
    emb, labels = EASY
    with pytest.raises(ValueError, match=error):
        _Broken(triplets)(emb, labels)


@pytest.mark.parametrize(
    ("kind", "cls", "error"),
    [
        ("semi-hard", SemiHardMiner, None),
        ("hardest", HardestMiner, None),
        ("random", RandomNegativeMiner, None),
        ("x", None, ValueError),
    ],
)
def test_build_miner(kind: str, cls: type | None, error: type[Exception] | None) -> None:
    if error is not None:
        with pytest.raises(error):
            build_miner(kind)
    else:
        assert isinstance(build_miner(kind), cls)  # type: ignore[arg-type]
