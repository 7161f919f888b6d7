"""``fedssl-export``: encoder checkpoint -> ``encoder.onnx`` (+ int8 / fp16 variants), each with a sidecar JSON.

    fedssl-export outputs/<run-id>/encoder.pt                  # -> outputs/<run-id>/encoder.onnx + encoder.json
    fedssl-export outputs/<run-id> -o dist/encoder.onnx --quantize int8 --fp16

The fp32 file is checked against PyTorch on real images (max |diff| <= 1e-4,
cosine >= 0.9999) before it is moved into place; if the check fails nothing is
written and the exit status is 1. Variants report their distance to PyTorch
and their retrieval accuracy change (Fashion-MNIST, gallery from train,
queries from test). Exit status 2: missing or unreadable checkpoint / images.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from export.evaluation import RetrievalTask, evaluate_onnx, evaluate_torch
from export.metadata import EncoderMetadata, write_sidecar
from export.onnx_export import export_encoder
from export.parity import MAX_ABS_DIFF, MIN_COSINE, ParityError, check_parity, compare, torch_embed
from export.quantize import convert_fp16, quantize_int8
from export.retrieve.encoder import OnnxEncoder
from export.retrieve.images import FileImages, fit_array
from fedssl.checkpoint import load_encoder
from fedssl.data.fashion_mnist import DatasetMissingError, load_fashion_mnist


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedssl-export", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="encoder.pt, or a run folder that holds one")
    p.add_argument("-o", "--output", help="the .onnx to write (default: encoder.onnx beside the checkpoint)")
    p.add_argument("--quantize", choices=["int8"], help="also write <output>.int8.onnx (static, calibrated)")
    p.add_argument("--fp16", action="store_true", help="also write <output>.fp16.onnx")
    p.add_argument("--images", metavar="DIR",
                   help="real images for the parity check and int8 calibration (default: Fashion-MNIST)")
    p.add_argument("--audio", metavar="DIR",
                   help="audio encoders: audio files for the parity check and int8 calibration "
                        "(default: synthetic notes)")
    p.add_argument("--video", metavar="DIR",
                   help="video encoders: video files for the parity check and int8 calibration "
                        "(default: clips drawn like the generated corpus's)")
    p.add_argument("--parity-images", type=int, default=256)
    p.add_argument("--calibration-images", type=int, default=512)
    p.add_argument("--eval-gallery", type=int, default=10000, help="Fashion-MNIST train images (0: no accuracy)")
    p.add_argument("--eval-queries", type=int, default=2000, help="Fashion-MNIST test images used as queries")
    p.add_argument("--max-abs-diff", type=float, default=None,
                   help=f"parity limit (default {MAX_ABS_DIFF:g} for images, 1e-3 for audio encoders, whose STFT "
                        "and log run in float32 in both runtimes)")
    p.add_argument("--min-cosine", type=float, default=MIN_COSINE)
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    return p


def real_images(folder: str | None, split: str, count: int, meta: EncoderMetadata, seed: int) -> np.ndarray:
    """``count`` uint8 images at the model's size: from ``folder`` if given, else a random Fashion-MNIST subset.

    Raises:
        ValueError: if the folder holds no readable image.
    """
    if folder:
        source = FileImages([folder], meta.height, meta.channels)
        batches, have = [], 0
        for batch in source.batches(256):
            batches.append(batch.images)
            have += len(batch.images)
            if have >= count:
                break
        if not batches:
            raise ValueError(f"no readable image in {folder}: {source.skipped.summary()}")
        if source.skipped:
            print(f"fedssl-export: {source.skipped.summary()}", file=sys.stderr)
        return np.concatenate(batches)[:count]
    images, _ = load_fashion_mnist(split)
    pick = np.sort(np.random.default_rng(seed).choice(len(images), min(count, len(images)), replace=False))
    return fit_array(images[pick], meta.height, meta.channels)


def resolve_checkpoint(path: str) -> Path:
    p = Path(path)
    return p / "encoder.pt" if p.is_dir() else p


def variant_path(output: Path, precision: str) -> Path:
    """``dist/encoder.onnx`` -> ``dist/encoder.int8.onnx``."""
    return output.with_name(f"{output.stem}.{precision}{output.suffix}")


def export_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Export, check, quantise, evaluate, write sidecars; returns one summary row per file written."""
    checkpoint = resolve_checkpoint(args.checkpoint)
    encoder, ckpt_meta = load_encoder(checkpoint)
    output = Path(args.output) if args.output else checkpoint.with_name("encoder.onnx")
    if ckpt_meta.get("modality") == "audio":  # waveform in: the front end is inside the model (export/audio.py)
        from export.audio import AUDIO_MAX_ABS_DIFF, export_audio

        return export_audio(encoder, ckpt_meta, checkpoint, output, audio_dir=args.audio,
                            int8=args.quantize == "int8", opset=args.opset,
                            max_abs_diff=AUDIO_MAX_ABS_DIFF if args.max_abs_diff is None else args.max_abs_diff,
                            min_cosine=args.min_cosine)
    if ckpt_meta.get("modality") == "video":  # grey clips in (export/video.py)
        from export.video import export_video

        return export_video(encoder, ckpt_meta, checkpoint, output, video_dir=args.video,
                            int8=args.quantize == "int8", opset=args.opset,
                            max_abs_diff=MAX_ABS_DIFF if args.max_abs_diff is None else args.max_abs_diff,
                            min_cosine=args.min_cosine)
    meta = EncoderMetadata.from_checkpoint_meta(ckpt_meta)
    parity_images = real_images(args.images, "test", args.parity_images, meta, seed=1)
    reference = torch_embed(encoder, parity_images, meta)

    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".export-") as tmp:
        staged = export_encoder(encoder, meta, Path(tmp) / output.name, opset=args.opset)
        max_abs_diff = MAX_ABS_DIFF if args.max_abs_diff is None else args.max_abs_diff
        parity = check_parity(encoder, staged, parity_images, meta, max_abs_diff, args.min_cosine)
        staged.replace(output)  # only a checked model reaches its final name
    files = {"fp32": output}
    if args.quantize == "int8":
        calibration = real_images(args.images, "train", args.calibration_images, meta, seed=2)
        files["int8"] = quantize_int8(output, variant_path(output, "int8"), calibration, meta)
    if args.fp16:
        files["fp16"] = convert_fp16(output, variant_path(output, "fp16"), meta)

    accuracy: dict[str, dict[str, float]] = {}
    if args.eval_gallery > 0:
        task = RetrievalTask.fashion_mnist(meta.height, meta.channels, args.eval_gallery, args.eval_queries)
        accuracy["torch"] = evaluate_torch(encoder, meta, task)
        accuracy.update({precision: evaluate_onnx(path, task) for precision, path in files.items()})
    rows = []
    for precision, path in files.items():
        diff, cos = compare(reference, OnnxEncoder(path, "cpu").embed(parity_images))
        vs_torch = {"images": len(parity_images), "max_abs_diff": diff, "min_cosine": cos}
        extra: dict[str, Any] = {"source_checkpoint": str(checkpoint.resolve()), "vs_torch": vs_torch}
        if precision == "fp32":
            extra["parity"] = parity.to_dict()
        if accuracy:
            extra["retrieval"] = {
                "task": f"fashion-mnist: gallery {args.eval_gallery} train, queries {args.eval_queries} test",
                **accuracy[precision], "torch": accuracy["torch"],
                "change_vs_torch_points": {k: round(100 * (accuracy[precision][k] - v), 3)
                                           for k, v in accuracy["torch"].items()},
                "change_vs_fp32_points": {k: round(100 * (accuracy[precision][k] - v), 3)
                                          for k, v in accuracy["fp32"].items()}}
        write_sidecar(path, meta.with_precision(precision), **extra)
        rows.append({"precision": precision, "path": path, "mb": path.stat().st_size / 2**20, **vs_torch,
                     "accuracy": accuracy.get(precision)})
    print_summary(meta, rows, accuracy.get("torch"))
    return rows


def print_summary(meta: EncoderMetadata, rows: list[dict[str, Any]], torch_acc: dict[str, float] | None) -> None:
    print(f"exported run {meta.run_id} round {meta.round} ({meta.model.get('encoder', '?')}, "
          f"{meta.channels}x{meta.height}x{meta.width} -> {meta.embedding_dim})")
    for r in rows:
        line = (f"  {str(r['path']):<40} {r['precision']}  {r['mb']:5.2f} MB  vs torch: max|diff| "
                f"{r['max_abs_diff']:.2e}  min cos {r['min_cosine']:.6f}")
        if r["accuracy"] and torch_acc:
            line += "  " + "  ".join(f"{k} {v:.4f} ({100 * (v - torch_acc[k]):+.2f} pt)"
                                     for k, v in r["accuracy"].items())
        print(line)
    if torch_acc:
        print("  PyTorch reference: " + "  ".join(f"{k} {v:.4f}" for k, v in torch_acc.items()))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        export_all(args)
    except ParityError as exc:
        print(f"fedssl-export: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, DatasetMissingError, ValueError) as exc:
        print(f"fedssl-export: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
