"""Benchmark of issue #4: the exported encoder on a device-like CPU — latency, accuracy, query cost.

One run writes ``<results-dir>/export.json`` and ``<results-dir>/export.md``:

- per-image latency (batch 1, and per image within a batch of 64) of PyTorch eager vs
  onnxruntime fp32 / int8 / fp16, with ``--threads`` threads each (torch, onnxruntime and
  BLAS limited alike; default 1), measured interleaved (round-robin blocks) so that a shared machine's
  load hits every backend alike;
- retrieval accuracy of each (Fashion-MNIST, gallery from train, queries from test):
  nearest-neighbour top-1 label agreement and weighted kNN top-1;
- query latency of ``fedssl-retrieve``'s exact cosine search over galleries of 10k and 100k
  embeddings: search only, one query end to end (decode PNG + embed + search), and per query
  in a batch of 100. Gallery rows are random unit vectors of the model's dimension (exact
  search costs the same whatever the vectors hold).

    python bench/bench_export.py --checkpoint outputs/<run-id>/encoder.pt
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image
from threadpoolctl import threadpool_limits  # ships with scikit-learn

from export.evaluation import RetrievalTask, embed_onnx, retrieval_scores
from export.metadata import EncoderMetadata
from export.onnx_export import export_encoder
from export.parity import check_parity, torch_embed
from export.quantize import convert_fp16, quantize_int8
from export.retrieve.encoder import OnnxEncoder
from export.retrieve.images import FileImages, normalize
from export.retrieve.index import RetrievalIndex
from export.retrieve.search import l2_normalize
from fedssl.checkpoint import load_encoder

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ("torch", "fp32", "int8", "fp16")


def machine(threads: list[int]) -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "load_avg_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": ort.__version__,
            "numpy": np.__version__, "commit": commit.stdout.strip() or "unknown"}


def interleaved_ms(calls: dict[str, Callable[[], Any]], rounds: int, per_round: int, warmup: int = 10) -> dict:
    """Median and p90 milliseconds per call of each callable, timed in round-robin blocks."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            for _ in range(per_round):
                start = time.perf_counter()
                fn()
                times[name].append(1000 * (time.perf_counter() - start))
    return {name: {"median_ms": statistics.median(t), "p90_ms": float(np.percentile(t, 90)), "calls": len(t)}
            for name, t in times.items()}


def export_variants(encoder: torch.nn.Module, meta: EncoderMetadata, task: RetrievalTask, folder: Path) -> dict:
    fp32 = export_encoder(encoder, meta, folder / "encoder.onnx")
    parity = check_parity(encoder, fp32, task.queries[:256], meta)
    return {"fp32": fp32, "int8": quantize_int8(fp32, folder / "encoder.int8.onnx", task.gallery[:512], meta),
            "fp16": convert_fp16(fp32, folder / "encoder.fp16.onnx", meta), "parity": parity.to_dict()}


def encoder_latency(encoder: torch.nn.Module, sessions: dict[str, OnnxEncoder], meta: EncoderMetadata,
                    images: np.ndarray, rounds: int) -> dict[str, dict]:
    """Per-image latency at batch 1 and within a batch of 64 (preprocessing included for every backend)."""
    def torch_call(batch: np.ndarray) -> Callable[[], Any]:
        def run() -> Any:
            with torch.no_grad():
                return encoder(torch.from_numpy(normalize(batch, meta.mean, meta.std)))
        return run

    out: dict[str, dict] = {}
    for batch_size, per_round in ((1, 25), (64, 2)):
        batch = images[:batch_size]
        calls = {"torch": torch_call(batch), **{k: (lambda s=s, b=batch: s.embed(b)) for k, s in sessions.items()}}
        for name, t in interleaved_ms(calls, rounds, per_round).items():
            out.setdefault(name, {})[f"batch{batch_size}"] = {k: v / batch_size if k.endswith("_ms") else v
                                                              for k, v in t.items()}
    return out


def query_latency(session: OnnxEncoder, sizes: list[int], query_png: Path, rounds: int) -> dict[str, dict]:
    """Exact top-10 search cost over ``sizes`` synthetic galleries, alone and end to end."""
    rng = np.random.default_rng(0)
    dim = session.meta.embedding_dim
    queries = l2_normalize(rng.normal(size=(100, dim)))
    out = {}
    for size in sizes:
        index = RetrievalIndex(l2_normalize(rng.normal(size=(size, dim))), np.asarray([f"img{i}" for i in range(size)]),
                               np.asarray([""] * size), session.sha256)

        def end_to_end(index: RetrievalIndex = index) -> Any:
            batch = next(FileImages([query_png], session.size, session.channels).batches(1))
            return index.search(session.embed(batch.images), 10)

        t = interleaved_ms({"search": lambda index=index: index.search(queries[:1], 10), "end_to_end": end_to_end,
                            "batch100": lambda index=index: index.search(queries, 10)}, rounds, 10, warmup=3)
        out[str(size)] = {"gallery": size, "dim": dim, "index_mb": index.embeddings.nbytes / 2**20,
                          "search_ms": t["search"]["median_ms"], "search_p90_ms": t["search"]["p90_ms"],
                          "end_to_end_ms": t["end_to_end"]["median_ms"],
                          "batch100_ms_per_query": t["batch100"]["median_ms"] / 100}
    return out


def markdown(result: dict[str, Any]) -> str:
    r, m = result["results"], result["machine"]
    acc, size = r["accuracy"], r["file_mb"]
    head = "| | PyTorch eager | ORT fp32 | ORT int8 | ORT fp16 |\n|---|---:|---:|---:|---:|\n"
    rows = []
    for threads, lat in r["latency"].items():
        unit = f"{threads} thread{'s' if threads != '1' else ''}"
        rows += [(f"latency, batch 1, {unit} (ms/image)", lambda b, lat=lat: f"{lat[b]['batch1']['median_ms']:.3f}"),
                 (f"latency, batch 64, {unit} (ms/image)",
                  lambda b, lat=lat: f"{lat[b]['batch64']['median_ms']:.3f}"),
                 (f"speed-up vs PyTorch, batch 1, {unit}",
                  lambda b, lat=lat: f"{lat['torch']['batch1']['median_ms'] / lat[b]['batch1']['median_ms']:.2f}x")]
    rows += [("retrieval top-1 (nearest neighbour)", lambda b: f"{acc[b]['top1']:.4f}"),
             ("weighted kNN top-1 (k=200)", lambda b: f"{acc[b]['knn']:.4f}"),
             ("top-1 change vs PyTorch (points)", lambda b: f"{100 * (acc[b]['top1'] - acc['torch']['top1']):+.2f}"),
             ("model file (MB)", lambda b: f"{size[b]:.2f}" if b in size else "-")]
    table = head + "".join(f"| {name} | " + " | ".join(f(b) for b in BACKENDS) + " |\n" for name, f in rows)
    q = ("| gallery (embeddings) | threads | index (MB) | search top-10 (ms) | one query end to end (ms) "
         "| per query in a batch of 100 (ms) |\n|---:|---:|---:|---:|---:|---:|\n")
    q += "".join(f"| {v['gallery']:,} | {threads} | {v['index_mb']:.1f} | {v['search_ms']:.2f} | "
                 f"{v['end_to_end_ms']:.2f} | {v['batch100_ms_per_query']:.3f} |\n"
                 for threads, per_size in r["query"].items() for v in per_size.values())
    dim = next(iter(next(iter(r["query"].values())).values()))["dim"]
    return (f"# Export benchmark\n\nEncoder `{r['encoder']}` (run {r['run_id']}, round {r['round']}); "
            f"{m['cpu']}, {m['cores']} cores, load average {m['load_avg_1m']} at start and "
            f"{result['load_avg_end']} at end; onnxruntime {m['onnxruntime']}, torch {m['torch']}; "
            f"commit {m['commit']}. Medians of interleaved runs.\n"
            f"Accuracy: {r['task']}. Parity fp32 vs PyTorch: max |diff| {r['parity']['max_abs_diff']:.2e}, "
            f"min cosine {r['parity']['min_cosine']:.6f}.\n\n{table}\n"
            f"Query latency (exact cosine top-10; end to end = decode a PNG + ORT fp32 embedding + search; "
            f"synthetic unit-vector galleries of dim {dim}):\n\n{q}\n"
            f"Command: `{result['command']}` ({result['seconds']:.0f} s).\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="encoder.pt of a finished run (or its folder)")
    p.add_argument("--results-dir", default=str(REPO / "bench" / "results"))
    p.add_argument("--gallery", type=int, default=10000, help="Fashion-MNIST train images (accuracy gallery)")
    p.add_argument("--queries", type=int, default=2000, help="Fashion-MNIST test images (accuracy queries)")
    p.add_argument("--rounds", type=int, default=20, help="round-robin timing rounds")
    p.add_argument("--threads", default="1", help="comma-separated thread counts for torch, onnxruntime and BLAS "
                   "(default 1: robust on a shared machine; e.g. 1,4 on a quad-core device)")
    p.add_argument("--query-galleries", default="10000,100000")
    args = p.parse_args(argv)
    started = time.time()
    thread_counts = sorted({int(t) for t in args.threads.split(",")})
    checkpoint = Path(args.checkpoint)
    checkpoint = checkpoint / "encoder.pt" if checkpoint.is_dir() else checkpoint
    encoder, ckpt = load_encoder(checkpoint)
    meta = EncoderMetadata.from_checkpoint_meta(ckpt)
    task = RetrievalTask.fashion_mnist(meta.height, meta.channels, args.gallery, args.queries)
    env = machine(thread_counts)

    with tempfile.TemporaryDirectory() as tmp:
        files = export_variants(encoder, meta, task, Path(tmp))
        parity = files.pop("parity")
        sessions = {k: OnnxEncoder(path, "cpu") for k, path in files.items()}
        accuracy = {"torch": retrieval_scores(torch_embed(encoder, task.gallery, meta),
                                              torch_embed(encoder, task.queries, meta), task)}
        accuracy |= {k: retrieval_scores(embed_onnx(s, task.gallery), embed_onnx(s, task.queries), task)
                     for k, s in sessions.items()}
        query_png = Path(tmp) / "query.png"
        Image.fromarray(task.queries[0].transpose(1, 2, 0).squeeze(-1) if meta.channels == 1
                        else task.queries[0].transpose(1, 2, 0)).save(query_png)
        sizes = [int(s) for s in args.query_galleries.split(",")]
        latency, query = {}, {}
        for threads in thread_counts:
            torch.set_num_threads(threads)
            sessions = {k: OnnxEncoder(path, "cpu", threads) for k, path in files.items()}
            with threadpool_limits(threads):
                latency[str(threads)] = encoder_latency(encoder, sessions, meta, task.queries, args.rounds)
                query[str(threads)] = query_latency(sessions["fp32"], sizes, query_png, max(3, args.rounds // 4))
        file_mb = {k: path.stat().st_size / 2**20 for k, path in files.items()}

    result = {
        "benchmark": "export", "machine": env, "load_avg_end": round(os.getloadavg()[0], 2),
        "command": " ".join(["python bench/bench_export.py", *(sys.argv[1:] if argv is None else argv)]),
        "seconds": time.time() - started,
        "results": {"encoder": meta.model.get("encoder", "?"), "run_id": meta.run_id, "round": meta.round,
                    "task": f"Fashion-MNIST, gallery {len(task.gallery)} train / {len(task.queries)} test queries",
                    "parity": parity, "accuracy": accuracy, "latency": latency, "query": query, "file_mb": file_mb},
    }
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "export.json").write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    (out / "export.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
