"""Gallery search benchmark: exact numpy, IVF-PQ scan, PQ scan, HNSW and IVF (faiss, re-ranked exactly),
GPU exact search.

Two galleries, one row per identity, 128-D:

* ``synthetic``: random unit vectors (seed fixed). Probes are gallery rows plus noise scaled so that a
  probe lies at squared L2 ``SAME_PERSON_SQ`` from its source: 0.43, the median distance between an
  LFW person's first photo and their other photos under the default model (facenet-irv1-128 v1).
  Random probes would have no meaningful nearest neighbour.
* ``lfw-mix``: the real embeddings of the 1,680 LFW people with two or more photos (first photo
  enrolled) hidden at random places among synthetic distractors, probed with their other photos.
  The embeddings are computed once (MTCNN + IRV1 over 9,164 images, ~15 min on two busy cores) and
  cached in ``~/.cache/streamproc/bench/lfw-multi-<version>.npz``.

``recall_at_1`` / ``recall_at_10``: share of probes whose exact float32 top-1 is the index's top-1 /
among its top-10 (exact rows: 1.0 for float32 by definition). ``true_top1``: share whose top-1 is the
probe's own person. ``index`` is exact | ivfpq | pq | hnsw | ivf | gpu (``--index`` picks the
approximate ones); ivfpq rows sweep ``--share`` (cells scanned: ``nprobe = ceil(share * nlist)``), hnsw
rows ``--ef`` and ivf rows ``--nprobe`` over one build. Latency rows use ``--threads`` faiss threads.
``--redis`` sizes are also enrolled into a Debian ``redis-server`` on a free loopback port and loaded
back with ``GalleryIndex.load`` (timed: ``redis_load_s``); the server's dump is kept in
``~/.cache/streamproc/bench/redis`` so a rerun skips the enrollment (an hour of a busy machine at 1M).
``pq`` and ``hnsw`` indexes are kept in ``~/.cache/streamproc/bench`` too, with the build time they
took; ``ivfpq`` builds in seconds and is built (and timed) every run.

    python bench/gallery_search.py --sizes 10000,100000,1000000 --json out/gallery_search.json
    python bench/gallery_search.py --sizes 1000000 --index ivfpq --skip-exact --redis ""
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from streamproc.gallery.ann import MASKED, AnnOptions, IvfIndex
from streamproc.gallery.base import IdentityRows
from streamproc.gallery.hnsw import HnswIndex
from streamproc.gallery.index import GalleryIndex
from streamproc.gallery.ivfpq import IvfPqScanIndex
from streamproc.gallery.redis_store import RedisGalleryStore

DIM = 128
MODEL = "bench-v1"
SAME_PERSON_SQ = 0.43
BENCH_CACHE = Path.home() / ".cache/streamproc/bench"
Data = tuple[np.ndarray, np.ndarray, np.ndarray]  # gallery rows, probe rows, probe's gallery row
Masked = Literal["ivfpq", "pq", "hnsw"]
INDEXES = ("ivfpq", "pq", "hnsw", "ivf")


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = np.empty((n, DIM), np.float32)
    for s in range(0, n, 1 << 20):  # in slices: 10M rows without a 10 GiB float64 temporary
        part = rng.standard_normal((min(n - s, 1 << 20), DIM), dtype=np.float32)
        x[s : s + len(part)] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return x


def synthetic(n: int, probes: int, rng: np.random.Generator) -> Data:
    gallery = unit(rng, n)
    src = rng.integers(0, n, probes)
    scale = np.sqrt(1.0 / (1.0 - SAME_PERSON_SQ / 2) ** 2 - 1.0)  # |noise| giving that squared distance
    p = gallery[src] + scale * unit(rng, probes)
    return gallery, p / np.linalg.norm(p, axis=1, keepdims=True), src


def lfw_embeddings() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First-photo rows of the 1,680 people, their other photos' rows, and whose those are."""
    sys.path.insert(0, str(Path(__file__).parent))
    from lfw_identification import embed_all

    from streamproc import env
    from streamproc.config import load_config
    from streamproc.faces import FacePipeline

    root = env.shared_data() / "lfw" / "lfw-deepfunneled"
    people = {p.name: sorted(p.glob("*.jpg")) for p in sorted(root.iterdir()) if p.is_dir()}
    multi = [imgs for imgs in people.values() if len(imgs) >= 2]
    paths = [p for imgs in multi for p in imgs]
    key = "\n".join(map(str, paths))
    for cache in sorted(BENCH_CACHE.glob("lfw-multi-*.npz")):  # made by an earlier run: no model load
        with np.load(cache, allow_pickle=False) as saved:
            if str(saved["key"]) == key:
                emb = np.asarray(saved["embeddings"])
                break
    else:
        pipeline = FacePipeline(load_config(None))
        emb = embed_all(pipeline, paths, BENCH_CACHE / f"lfw-multi-{pipeline.model_version}.npz")
    starts = np.cumsum([0] + [len(imgs) for imgs in multi])
    first = emb[starts[:-1]]
    others = np.concatenate([emb[a + 1 : b] for a, b in itertools.pairwise(starts)])
    owner = np.concatenate([np.full(b - a - 1, i) for i, (a, b) in enumerate(itertools.pairwise(starts))])
    return first, others, owner


def lfw_mix(n: int, probes: int, rng: np.random.Generator, lfw: tuple[np.ndarray, ...]) -> Data:
    first, others, owner = lfw
    gallery = unit(rng, n)
    at = rng.choice(n, len(first), replace=False)  # where the real people hide
    gallery[at] = first
    pick = rng.choice(len(others), min(probes, len(others)), replace=False)
    return gallery, others[pick], at[owner[pick]]


def timed(index: GalleryIndex, probes: np.ndarray, batch: int, repeats: int) -> list[float]:
    """Milliseconds of ``repeats`` searches of ``batch`` probes, after one untimed search: the first
    search after a build pays for page faults and waking faiss's threads (it was among the slowest of 1,000)."""
    index.search(probes[:batch])
    out = []
    for r in range(repeats):
        start = (r * batch) % (len(probes) - batch + 1)
        t = time.perf_counter()
        index.search(probes[start : start + batch])
        out.append((time.perf_counter() - t) * 1e3)
    return out


def top(index: GalleryIndex, probes: np.ndarray, k: int) -> np.ndarray:
    out = []
    for s in range(0, len(probes), 32):
        out += [
            [int(m.identity_id) for m in r] + [-1] * (k - len(r))
            for r in index.search(probes[s : s + 32], k=k)
        ]
    return np.array(out)


def rows_for(
    index: GalleryIndex,
    data: Data,
    ref: np.ndarray,
    base: dict[str, Any],
    args: argparse.Namespace,
    repeats: int | None = None,
) -> list[dict[str, Any]]:
    """One row per batch size: latency, recall against the exact top-10 ``ref``."""
    got = top(index, data[1], 10)
    recall1 = float(np.mean(got[:, 0] == ref[:, 0]))
    recall10 = float(np.mean([ref[i, 0] in got[i] for i in range(len(got))]))
    true1 = float(np.mean(got[:, 0] == data[2]))
    rows = []
    for batch in (1, 32):
        ms = timed(index, data[1], batch, repeats or args.repeats)
        row = base | {
            "batch": batch,
            "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "recall_at_1": recall1,
            "recall_at_10": recall10,
            "true_top1": true1,
            "index_bytes": index.nbytes,
            "samples": len(ms),
        }
        rows.append(row)
        extra = (
            f" nprobe={row['nprobe']:<3d}"
            if "nprobe" in row
            else f" ef={row['ef']:<4d}"
            if "ef" in row
            else ""
        )
        print(
            f"{row['data']:>9} {row['identities']:>10,d} {row['index']:>5} {row['dtype']:>7}{extra} batch={batch:<3d} "
            f"p50={row['p50_ms']:8.3f} ms  p99={row['p99_ms']:8.3f} ms  recall@1={recall1:.4f} recall@10={recall10:.4f} "
            f"true_top1={true1:.4f}  build={row['build_s']:7.2f}s  index={index.nbytes / 2**20:8.1f} MiB",
            flush=True,
        )
    return rows


def run(name: str, data: Data, args: argparse.Namespace) -> list[dict[str, Any]]:
    n = len(data[0])
    ids = [str(i) for i in range(n)]
    rows: list[dict[str, Any]] = []
    base = {"data": name, "identities": n}
    t = time.perf_counter()
    exact = GalleryIndex.from_arrays(ids, ids, data[0], ann=None)
    base_exact = base | {"index": "exact", "dtype": "float32", "build_s": round(time.perf_counter() - t, 2)}
    ref = top(exact, data[1], 10)
    if not args.skip_exact:  # fewer repeats: a 1M exact search takes seconds on a busy machine
        rows += rows_for(
            exact, data, ref, base_exact, args, max(5, args.repeats // 6) if n >= 1_000_000 else None
        )
    del exact
    if torch.cuda.is_available():
        gpu = GalleryIndex.from_arrays(ids, ids, data[0], ann=None, device="cuda")
        rows += rows_for(gpu, data, ref, base | {"index": "gpu", "dtype": "float16", "build_s": 0.0}, args)
        del gpu
    if n > args.ann_max:
        return rows
    chosen = args.index.split(",")
    masked: tuple[Masked, ...] = ("ivfpq", "pq", "hnsw")
    for kind in masked:
        if kind in chosen:
            rows += masked_rows(kind, name, data, ref, base, args)
    if "ivf" in chosen:  # the name, not a substring of "ivfpq"
        rows += ivf_rows(data, ref, base, args)
    return rows


def ivf_rows(
    data: Data, ref: np.ndarray, base: dict[str, Any], args: argparse.Namespace
) -> list[dict[str, Any]]:
    ids = [str(i) for i in range(len(data[0]))]
    options = AnnOptions(
        min_size=1, kind="ivf", storage=args.storage, candidates=args.candidates, threads=args.threads
    )
    t = time.perf_counter()
    ivf = GalleryIndex.from_arrays(ids, ids, data[0], ann=options)
    build_s = round(time.perf_counter() - t, 2)
    assert isinstance(ivf._ann, IvfIndex)
    rows = []
    for nprobe in [int(v) for v in args.nprobe.split(",")]:
        ivf._ann.nprobe = nprobe
        extra = {
            "index": "ivf",
            "dtype": args.storage,
            "nprobe": nprobe,
            "nlist": ivf._ann.nlist,
            "build_s": build_s,
        }
        rows += rows_for(ivf, data, ref, base | extra, args)
    return rows


def cached_ann(
    gallery: np.ndarray, row_ids: np.ndarray, options: AnnOptions, args: argparse.Namespace
) -> tuple[HnswIndex, float]:
    """The IVF-PQ scan, PQ scan or HNSW graph of the synthetic gallery of this size and seed; the last
    two are read from ``BENCH_CACHE`` when an earlier run built them (their build time is kept beside
    them), else built and saved there."""
    n, kind = len(gallery), options.kind
    cls = MASKED[kind]
    if kind == "ivfpq":  # seconds: built every run, so its build time is this run's
        t = time.perf_counter()
        ann = cls.build(gallery, row_ids, options.hnsw())
        build_s = round(time.perf_counter() - t, 2)
        print(f"ivfpq index of {n:,d} rows (pq{options.pq_m}) built in {build_s:.2f}s", flush=True)
        return ann, build_s
    shape = (
        f"pq{options.pq_m}"
        if kind == "pq"
        else f"m{options.m}-efc{options.ef_construction}-{options.storage}"
    )
    path = BENCH_CACHE / f"{kind}-{n}-seed{args.seed}-{shape}.faiss"
    info = path.with_suffix(".json")
    if info.exists():
        ann = cls.read(path, options.hnsw())
        if len(ann) == n and ann.dead == 0:
            print(f"{kind} index of {n:,d} rows read from {path}", flush=True)
            return ann, float(json.loads(info.read_text())["build_s"])
    t = time.perf_counter()
    ann = cls.build(gallery, row_ids, options.hnsw())
    build_s = round(time.perf_counter() - t, 2)
    print(f"{kind} index of {n:,d} rows ({shape}) built in {build_s:.1f}s", flush=True)
    BENCH_CACHE.mkdir(parents=True, exist_ok=True)
    ann.save(path)
    info.write_text(json.dumps({"build_s": build_s}))
    return ann, build_s


def masked_rows(
    kind: Masked,
    name: str,
    data: Data,
    ref: np.ndarray,
    base: dict[str, Any],
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """IVF-PQ-scan, PQ-scan or HNSW rows: one index per size over the synthetic gallery (the lfw-mix
    gallery is the same gallery with 1,680 rows replaced: those people are re-enrolled into it, i.e.
    removed and added incrementally, exercising the removal mask); IVF-PQ is swept over ``--share``,
    HNSW over ``--ef``."""
    n = len(data[0])
    ids = [str(i) for i in range(n)]
    synthetic_rows = unit(np.random.default_rng(args.seed), n)  # what `synthetic` and `lfw_mix` start from
    options = AnnOptions(
        min_size=1, kind=kind, storage=args.hnsw_storage, candidates=args.candidates, threads=args.threads,
        m=args.m, ef_construction=args.ef_construction, pq_m=args.pq_m, nlist=args.nlist,
    )  # fmt: skip
    index = GalleryIndex.from_arrays(ids, ids, synthetic_rows, ann=None)
    ann, build_s = cached_ann(synthetic_rows, index.row_ids, options, args)
    index.use_ann(ann, options)
    changed = np.flatnonzero((synthetic_rows != data[0]).any(axis=1))
    t = time.perf_counter()
    index.add_many([IdentityRows(ids[i], ids[i], data[0][i : i + 1]) for i in changed])
    if len(changed):
        print(f"{name}: {len(changed):,d} people re-enrolled in {time.perf_counter() - t:.2f}s", flush=True)
    del synthetic_rows
    if kind == "pq":
        extra = {"index": "pq", "dtype": f"pq{args.pq_m}x4", "build_s": build_s}
        return rows_for(index, data, ref, base | extra, args)
    rows = []
    if isinstance(ann, IvfPqScanIndex):
        for share in [float(v) for v in args.share.split(",")]:
            ann.nprobe = math.ceil(share * ann.nlist)
            extra = {"index": "ivfpq", "dtype": f"pq{args.pq_m}x4", "nprobe": ann.nprobe}
            extra |= {"nlist": ann.nlist, "share": share, "build_s": build_s}
            rows += rows_for(index, data, ref, base | extra, args)
        return rows
    dtype = "float32" if args.hnsw_storage == "flat" else "sq8"
    for ef in [int(v) for v in args.ef.split(",")]:
        ann.ef_search = ef
        extra = {"index": "hnsw", "dtype": dtype, "ef": ef, "m": args.m, "build_s": build_s}
        rows += rows_for(index, data, ref, base | extra, args)
    return rows


def redis_server(folder: Path, dump: str) -> tuple[subprocess.Popen[bytes], str]:
    """A ``redis-server`` on a free loopback port that starts from ``folder/dump`` when it exists."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    binary = shutil.which("redis-server") or sys.exit(
        "redis-server is not installed (apt-get install redis-server)"
    )
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        [binary, *args, "--dir", str(folder), "--dbfilename", dump], stdout=subprocess.DEVNULL
    )
    return proc, f"redis://127.0.0.1:{port}/0"


def wait_ready(client: Any, proc: subprocess.Popen[bytes]) -> None:
    """Until the server answers and has read its dump file."""
    import redis

    while True:
        if proc.poll() is not None:
            sys.exit("redis-server exited")
        try:
            if client.info("persistence")["loading"] == 0:
                return
        except (redis.ConnectionError, redis.BusyLoadingError):
            pass
        time.sleep(0.2)


def redis_load(n: int) -> dict[str, Any]:
    """Enrol ``n`` synthetic identities (untimed; the server's dump is kept in ``BENCH_CACHE/redis`` so a
    rerun starts from it), then time ``GalleryIndex.load`` of them."""
    import redis

    folder = BENCH_CACHE / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    proc, url = redis_server(folder, f"gallery-{n}.rdb")
    try:
        client = redis.Redis.from_url(url)
        wait_ready(client, proc)
        store = RedisGalleryStore(client, prefix="bench")
        t = time.perf_counter()
        enrolled = client.scard(f"bench:model:{MODEL}:members")
        if enrolled != n:
            client.flushdb()
            gallery = unit(np.random.default_rng(1), n)
            for s in range(0, n, 100_000):
                part = [(f"p{i:08d}", gallery[i : i + 1]) for i in range(s, min(n, s + 100_000))]
                store.enroll_many(part, MODEL, batch_size=2000)
                print(f"redis: {s + len(part):,d} of {n:,d} enrolled", flush=True)
            client.bgsave()  # SAVE of ~1 GiB outlasts the store's socket timeout
            while client.info("persistence")["rdb_bgsave_in_progress"]:
                time.sleep(0.5)
        enroll_s = time.perf_counter() - t
        t = time.perf_counter()
        index = GalleryIndex.load(store, MODEL, ann=None)
        load_s = time.perf_counter() - t
        assert len(index) == n, (len(index), n)
        store.close()
    finally:
        proc.terminate()
        proc.wait()
    how = "read from the saved dump" if enrolled == n else f"enrolled in {enroll_s:.1f}s"
    print(f"redis load: {n:,d} identities {how}, loaded by GalleryIndex.load in {load_s:.2f}s", flush=True)
    return {
        "data": "redis-load",
        "identities": n,
        "redis_load_s": round(load_s, 2),
        "enroll_s": round(enroll_s, 1) if enrolled != n else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated gallery sizes")
    parser.add_argument("--big", action="store_true", help="also 10,000,000 identities")
    parser.add_argument("--data", default="synthetic,lfw-mix", help="galleries: synthetic, lfw-mix")
    parser.add_argument(
        "--redis", default="1000000", help="sizes also loaded through a real Redis ('' = none)"
    )
    parser.add_argument("--probes", type=int, default=512, help="probes for recall and latency")
    parser.add_argument(
        "--repeats", type=int, default=1000, help="timed searches per row (p99 of 60 is nearly their maximum)"
    )
    parser.add_argument("--nprobe", default="16,32,64,128", help="IVF cells scanned per probe (one row each)")
    parser.add_argument("--storage", default="sq8", choices=["sq8", "flat"])
    parser.add_argument("--candidates", type=int, default=32, help="IVF candidates re-ranked exactly")
    parser.add_argument("--threads", type=int, default=2, help="faiss OpenMP threads")
    parser.add_argument(
        "--index", default="ivfpq,pq,hnsw", help=f"approximate indexes, comma-separated: {', '.join(INDEXES)}"
    )
    parser.add_argument("--share", default="0.375", help="IVF-PQ share of cells scanned (one row each)")
    parser.add_argument("--nlist", type=int, default=0, help="IVF-PQ cells; 0 = sqrt(identities)")
    parser.add_argument("--pq-m", type=int, default=32, help="PQ scan: 4-bit codes a row")
    parser.add_argument("--ef", default="64,128,256", help="HNSW search beam (one row each)")
    parser.add_argument("--m", type=int, default=32, help="HNSW links a node")
    parser.add_argument("--ef-construction", type=int, default=40, help="HNSW build beam")
    parser.add_argument("--hnsw-storage", default="flat", choices=["sq8", "flat"])
    parser.add_argument("--ann-max", type=int, default=10_000_000, help="largest size given an IVF index")
    parser.add_argument("--skip-exact", action="store_true", help="no exact numpy rows (still the reference)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the rows as a JSON list here")
    args = parser.parse_args(argv)
    unknown = set(args.index.split(",")) - set(INDEXES)
    if unknown:
        parser.error(f"--index: expected some of {', '.join(INDEXES)}, got {', '.join(sorted(unknown))}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("streamproc.gallery.quantize").setLevel(logging.ERROR)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()] + (
        [10_000_000] if args.big else []
    )
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none (GPU rows skipped)"
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    load = "/".join(f"{v:.1f}" for v in os.getloadavg())  # the machine is shared: say how busy it was
    print(
        f"gallery search bench: dim={DIM} cpus={os.cpu_count()} load={load} OPENBLAS_NUM_THREADS={threads} gpu={gpu}"
    )
    rows: list[dict[str, Any]] = []
    lfw = lfw_embeddings() if "lfw-mix" in args.data else None
    for n in sizes:
        for name in args.data.split(","):
            rng = np.random.default_rng(args.seed)
            if name == "synthetic" or lfw is None:
                data = synthetic(n, args.probes, rng)
            else:
                data = lfw_mix(n, args.probes, rng, lfw)
            rows += run(name, data, args)
            del data
    for n in [int(s) for s in args.redis.split(",") if s.strip()]:
        rows.append(redis_load(n))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
