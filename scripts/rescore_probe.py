"""Re-score finished runs with the retrieval probe (exact cosine kNN, no centring) beside the old centred one.

``python scripts/rescore_probe.py outputs/<run-id> [...] [--out bench/results/probe_rescore.json]``

For each run folder: its final ``encoder.pt``, its ``best/fashion-mnist.pt``, the raw pixels and the
random-init encoder of the run's seed, all on the run's own Fashion-MNIST probe (same gallery and
queries, drawn with the run's seed): kNN top-1 at ``eval.knn-k`` without and with centring. The runs'
metrics are not changed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fedssl.atomic import atomic_write_json
from fedssl.checkpoint import load_encoder
from fedssl.config import RunConfig
from fedssl.models.encoders import build_encoder
from fedssl.probe import load_probe_tasks, probe_backbone, probe_pixels


def rescore(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cfg = RunConfig.from_flat({k: v for k, v in metrics["config"].items()
                               if k not in ("eval.tasks",)} | {"eval.tasks": "fashion-mnist"})
    tasks = load_probe_tasks(cfg.eval, cfg.model.image_size, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    from fedssl.ssl import build_ssl_model  # the random init exactly as the ServerApp draws it

    random_init = build_encoder(cfg.model)
    random_init.load_state_dict({k[len("backbone."):]: v for k, v in build_ssl_model(cfg.ssl, cfg.model)
                                 .state_dict().items() if k.startswith("backbone.")}, strict=True)
    models = {"federated (encoder.pt)": load_encoder(run_dir / "encoder.pt")[0],
              "best/fashion-mnist.pt": load_encoder(run_dir / "best" / "fashion-mnist.pt")[0],
              "random-init": random_init}
    out = {"seed": cfg.seed, "recorded_centred": {"final": metrics["rounds"][-1]["knn"]["fashion-mnist"],
                                                  "raw-pixels": metrics["baselines"]["raw-pixels"]["fashion-mnist"]}}
    for name, model in models.items():
        s = probe_backbone(model, tasks, cfg.model, cfg.eval, linear=False)
        out[name] = {"knn": s.knn["fashion-mnist"], "knn_centred": s.knn_centred["fashion-mnist"]}
    s = probe_pixels(tasks, cfg.eval, linear=False)
    out["raw-pixels"] = {"knn": s.knn["fashion-mnist"], "knn_centred": s.knn_centred["fashion-mnist"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("bench/results/probe_rescore.json"))
    args = parser.parse_args()
    results = {}
    for run in args.runs:
        results[run.name] = rescore(run)
        print(run.name, json.dumps(results[run.name]), flush=True)
    atomic_write_json(args.out, results)


if __name__ == "__main__":
    main()
