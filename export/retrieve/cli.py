"""``fedssl-retrieve``: build a gallery index with an exported encoder, then query it (no torch needed).

    fedssl-retrieve index --model encoder.onnx --output gallery.npz --images ~/photos
    fedssl-retrieve index --model encoder.onnx --output gallery.npz --fashion-mnist train --limit 10000
    fedssl-retrieve query --model encoder.onnx --index gallery.npz shoe.png more/ -k 5 --format json
    fedssl-retrieve index --model audio.onnx --output sounds.npz --images ~/recordings   # an audio encoder:
    fedssl-retrieve query --model audio.onnx --index sounds.npz clip.wav                 # audio files in

Exit status: 0 done; 1 no readable query image; 2 bad arguments, model, index or output path
(one line saying why); 3 an unexpected error (one line; FEDSSL_DEBUG=1 shows the traceback);
130 interrupted. JSON output never holds NaN or infinity: images whose embedding is not finite are
skipped and named, like unreadable files.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from export.retrieve.audio import AudioFiles, OnnxAudioEncoder
from export.retrieve.encoder import ModelError, OnnxEncoder
from export.retrieve.images import FashionMnistImages, FileImages
from export.retrieve.index import IndexFileError, ModelMismatchError, RetrievalIndex, embed_source
from export.retrieve.media import OnnxMediaEncoder, model_props
from fedssl.data.decode import DEFAULT_MAX_PIXELS

PROG = "fedssl-retrieve"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (``fedssl-retrieve: error: ...``) and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{PROG}: error: {message} (see {self.prog} --help)\n")


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} must be >= {low}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="the exported encoder (.onnx, from fedssl-export)")
    p.add_argument("--fashion-mnist", metavar="SPLIT", choices=["train", "test"],
                   help="use a Fashion-MNIST split instead of image files (labels are class names)")
    p.add_argument("--offset", type=_int_at_least(0), default=0, help="first Fashion-MNIST image to use (default 0)")
    p.add_argument("--limit", type=_int_at_least(0), default=0, help="number of Fashion-MNIST images (default: all)")
    p.add_argument("--batch-size", type=_int_at_least(1), default=64)
    p.add_argument("--max-pixels", type=_int_at_least(1), default=DEFAULT_MAX_PIXELS,
                   help="skip (and name) image files with more pixels than this, read from their header "
                        f"before decoding (default {DEFAULT_MAX_PIXELS:,})")
    p.add_argument("--provider", default="auto", choices=["auto", "tensorrt", "cuda", "cpu"],
                   help="execution provider (auto: TensorRT > CUDA > CPU, whichever onnxruntime offers)")
    p.add_argument("--threads", type=_int_at_least(0), default=0,
                   help="threads for onnxruntime and for numpy's BLAS search (0: their defaults); "
                        "1 keeps latency steady on a device that is also training")
    p.add_argument("--no-progress", action="store_true", help="never show the progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n")[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    index = sub.add_parser("index", help="embed a folder of images (or Fashion-MNIST) into an index file")
    _add_common(index)
    index.add_argument("--images", nargs="+", metavar="PATH",
                       help="image, audio or video files or folders (searched recursively)")
    index.add_argument("--output", "-o", required=True, help="index file to write (.npz)")
    query = sub.add_parser("query", help="top-k neighbours of one or many images")
    _add_common(query)
    query.add_argument("images", nargs="*", metavar="IMAGE", help="query image, audio or video files or folders")
    query.add_argument("--index", required=True, help="index file from 'fedssl-retrieve index'")
    query.add_argument("-k", type=_int_at_least(1), default=5, help="neighbours per query (default 5)")
    query.add_argument("--format", choices=["text", "json"], default="text")
    return parser


def open_encoder(path: str | Path, provider: str = "auto", threads: int = 0) -> OnnxEncoder | OnnxMediaEncoder:
    """The right encoder for an exported model: audio (waveform in), video (grey clips in) or image."""
    modality = model_props(path).get("modality")
    if modality == "audio":
        return OnnxAudioEncoder(path, provider, threads)
    if modality == "video":
        from export.retrieve.video import OnnxVideoEncoder  # PyAV only where a video model is used

        return OnnxVideoEncoder(path, provider, threads)
    return OnnxEncoder(path, provider, threads)


def _source(args: argparse.Namespace, paths: Sequence[str] | None, encoder: OnnxEncoder):
    if bool(args.fashion_mnist) == bool(paths):
        raise ValueError("give either image paths or --fashion-mnist SPLIT (exactly one of them)")
    if getattr(encoder, "modality", "image") == "audio":  # an audio encoder: the paths are audio files
        if args.fashion_mnist:
            raise ValueError("--fashion-mnist needs an image encoder; this model takes audio")
        return AudioFiles(paths, encoder.meta.sample_rate, encoder.meta.samples)
    if getattr(encoder, "modality", "image") == "video":  # a video encoder: the paths are video files
        if args.fashion_mnist:
            raise ValueError("--fashion-mnist needs an image encoder; this model takes video")
        from export.retrieve.video import VideoFiles

        return VideoFiles(paths, encoder.meta.frames, encoder.meta.size)
    if args.fashion_mnist:
        return FashionMnistImages(args.fashion_mnist, encoder.size, encoder.channels, args.offset, args.limit)
    return FileImages(paths, encoder.size, encoder.channels, args.max_pixels)


def check_output(path: str) -> None:
    """Fail before any embedding if the index cannot be written to ``path``.

    Raises:
        ValueError: if ``path`` is a folder or special file, or its folder is a file.
    """
    out = Path(path)
    if out.is_dir():
        raise ValueError(f"--output {path} is a folder; give a file path such as {out / 'gallery.npz'}")
    if out.exists() and not out.is_file():
        raise ValueError(f"--output {path} exists and is not a regular file")
    parent = next((p for p in out.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ValueError(f"--output {path}: {parent} is a file, not a folder")
    if parent is not None and not os.access(parent, os.W_OK):
        raise ValueError(f"--output {path}: folder {parent} is not writable")


def run_index(args: argparse.Namespace) -> int:
    check_output(args.output)
    encoder = open_encoder(args.model, args.provider, args.threads)
    source = _source(args, args.images, encoder)
    index = RetrievalIndex.build(encoder, source, args.batch_size, False if args.no_progress else None)
    index.save(args.output)
    if source.skipped:
        print(source.skipped.summary(), file=sys.stderr)
    print(_printable(f"indexed {len(index)} image(s) into {args.output} (skipped {len(source.skipped)}); "
                     f"model {encoder.path.name} sha256 {encoder.sha256[:12]} on {encoder.providers[0]}"))
    return 0


def run_query(args: argparse.Namespace) -> int:
    index = RetrievalIndex.load(args.index)  # cheap checks first: a bad index fails before the model loads
    encoder = open_encoder(args.model, args.provider, args.threads)
    index.check_model(encoder)
    source = _source(args, args.images, encoder)
    queries, paths, labels = embed_source(encoder, source, args.batch_size,
                                          False if args.no_progress else None, desc="querying")
    if source.skipped:
        print(source.skipped.summary(), file=sys.stderr)
    if not paths:
        print(f"fedssl-retrieve: error: no readable query image ({len(source.skipped)} skipped)", file=sys.stderr)
        return 1
    scores, idx = index.search(queries, args.k)
    results = [{"query": p, "label": lab, "neighbours": [
        {"rank": r + 1, "score": round(float(s), 6), "path": str(index.paths[i]), "label": str(index.labels[i])}
        for r, (s, i) in enumerate(zip(scores[q], idx[q]))]} for q, (p, lab) in enumerate(zip(paths, labels))]
    report = {"model": str(encoder.path), "model_sha256": encoder.sha256, "index": args.index, "k": args.k,
              "provider": encoder.providers[0], "results": results, "top1_label_agreement": _agreement(results),
              "skipped": [{"path": f.path, "reason": f.reason.value, "detail": f.detail} for f in source.skipped],
              "skipped_by_reason": source.skipped.counts()}
    # allow_nan=False: a NaN that got this far is a bug, reported as an error, never printed as invalid JSON
    text = json.dumps(report, indent=1, allow_nan=False) if args.format == "json" else _as_text(report)
    print(text)
    return 0


def _agreement(results: list[dict[str, Any]]) -> float | None:
    """Top-1 label agreement over queries whose label and top neighbour's label are both known."""
    pairs = [(r["label"], r["neighbours"][0]["label"]) for r in results if r["label"] and r["neighbours"][0]["label"]]
    return round(sum(a == b for a, b in pairs) / len(pairs), 6) if pairs else None


def _as_text(report: dict[str, Any]) -> str:
    lines = []
    for r in report["results"]:
        lines.append(f"{r['query']}" + (f"  [{r['label']}]" if r["label"] else ""))
        lines += [f"  {n['rank']:>3}  {n['score']:.4f}  {n['path']}" + (f"  [{n['label']}]" if n["label"] else "")
                  for n in r["neighbours"]]
    if report["top1_label_agreement"] is not None:
        lines.append(f"top-1 label agreement: {report['top1_label_agreement']:.4f}")
    return _printable("\n".join(lines))


def _printable(text: str) -> str:
    """File names that are not valid UTF-8 (surrogate escapes) shown as ``\\udcXX`` instead of crashing print."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _blas_threads(threads: int) -> contextlib.AbstractContextManager:
    """Cap numpy's BLAS threads: on a busy CPU a multi-threaded BLAS turns a 0.2 ms search into 50 ms."""
    if threads <= 0:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits  # optional: pure Python, no torch
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(threads)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _blas_threads(args.threads):
            return run_index(args) if args.command == "index" else run_query(args)
    except (ModelError, ModelMismatchError, IndexFileError, ValueError, OSError) as exc:
        # OSError covers FileNotFoundError (e.g. the Fashion-MNIST package) and permission errors
        return _fail(2, f"{PROG}: error: {_printable(str(exc))}", exc)
    except KeyboardInterrupt as exc:
        return _fail(130, f"{PROG}: interrupted", exc)
    except Exception as exc:  # one line, never a traceback, unless asked for it
        return _fail(3, f"{PROG}: unexpected error: {type(exc).__name__}: {_printable(str(exc))} "
                        "(FEDSSL_DEBUG=1 shows the traceback)", exc)


def _fail(code: int, line: str, exc: BaseException) -> int:
    if isinstance(exc, BrokenPipeError):  # stdout closed early (| head): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if os.environ.get("FEDSSL_DEBUG"):
        raise exc
    print(line.replace("\n", " "), file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
