"""Corrupt weights are an error, never a model that silently gives wrong identities.

* ``verify_sha256``: a file against a digest known in advance (the fetched MTCNN weights).
* ``weights_digest``: the sha256 of a checkpoint's card and tensors, stored inside the checkpoint
  when it is written and recomputed at every load. Kept in the file itself, the digest travels
  with it and cannot go stale: a checkpoint rewritten by another release of streamproc is still
  judged by its own digest (an older release writes none: it is reported as unverifiable).

>>> state = {"w": torch.ones(2)}
>>> weights_digest({"name": "m"}, state) == weights_digest({"name": "m"}, {"w": torch.ones(2)})
True
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from streamproc.errors import ModelError
from streamproc.models.fetch import sha256_file

_verified: dict[Path, tuple[int, int, str]] = {}  # path -> (size, mtime_ns, sha256) checked already


def verify_sha256(path: Path, expected: str, hint: str) -> None:
    """Raise ``ModelError`` (one line, ``hint`` says what to do) unless ``path`` hashes to ``expected``."""
    stat = path.stat()
    if _verified.get(path) == (stat.st_size, stat.st_mtime_ns, expected):
        return
    if sha256_file(path) != expected:
        raise ModelError(f"{path} is corrupt (its sha256 differs from the one recorded for it): {hint}")
    _verified[path] = (stat.st_size, stat.st_mtime_ns, expected)


def weights_digest(card: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the card (as sorted JSON) and every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256(json.dumps(card, sort_keys=True, default=str).encode())
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def verify_weights(path: Path, raw: Mapping[str, Any], hint: str) -> bool:
    """Check a loaded checkpoint against its stored digest; False when it stores none (older release)."""
    expected = raw.get("sha256")
    if expected is None:
        return False
    stat = path.stat()
    if _verified.get(path) == (stat.st_size, stat.st_mtime_ns, expected):
        return True
    if weights_digest(raw["card"], raw["state_dict"]) != expected:
        raise ModelError(f"{path} is corrupt (its sha256 differs from the one recorded for it): {hint}")
    _verified[path] = (stat.st_size, stat.st_mtime_ns, expected)
    return True
