"""ServerApp: set up the run (fresh or resumed), hand the rounds to Flower, save the final encoder."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from fedssl.config import RunConfig
from fedssl.modality import MODALITIES
from fedssl.ssl import build_ssl_model
from fedssl.state import shared_arrays
from server_app.evaluation import RoundEvaluator
from server_app.metrics_exporter import MetricsExporter
from server_app.outputs import CHECKPOINT, RunOutputs
from server_app.reply_stream import StreamingGrid
from server_app.split_loop import SplitTrainer, run_split
from server_app.strategy import FedSSL
from server_app.verification import CollapseVerifier

app = ServerApp()


def run_directory(cfg: RunConfig, run_id: int) -> Path:
    """``<outputs-dir>/<run-id>``, or the folder named by ``resume``.

    ``resume`` may be a run id (``1234``), a path relative to ``outputs-dir`` or to the working
    directory (``outputs/1234``, the README's spelling, also works where ``outputs-dir`` is
    ``/outputs`` in a container), or an absolute path: the first of these with a checkpoint wins.

    Raises:
        ValueError: if none of them holds a checkpoint; the message names every folder tried.
    """
    root = Path(cfg.outputs_dir).expanduser()
    if not cfg.resume:
        return root / str(run_id)
    tried = resume_candidates(root, cfg.resume)
    for folder in tried:
        if (folder / CHECKPOINT).is_file():
            return folder
    raise ValueError(f"run config 'resume' = {cfg.resume!r}: no {CHECKPOINT} in any of "
                     + ", ".join(str(f) for f in tried))


def resume_candidates(root: Path, resume: str) -> list[Path]:
    """Where ``resume`` may point, in the order they are tried (duplicates removed)."""
    given = Path(resume).expanduser()
    candidates = [given] if given.is_absolute() else [root / given, given, root / given.name]
    return list(dict.fromkeys(candidates))


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = RunConfig.from_flat(context.run_config)
    torch.manual_seed(cfg.seed)
    outputs = RunOutputs(run_directory(cfg, context.run_id), context.run_id, cfg)
    if cfg.mode == "split":  # MocoSFL: stems on the devices, trunk and queue here (server_app/split_loop.py)
        run_split(grid, cfg, outputs, lambda trainer: _observers(cfg, trainer, context.run_id))
        log(logging.INFO, "[fedssl] finished: %s", outputs.root / "encoder.pt")
        return

    # 1. The starting point: a seeded random backbone (with its heads under transport-scope 'model'),
    #    or the last checkpoint of the resumed run.
    modality = MODALITIES.get(cfg.data.modality)
    model = build_ssl_model(cfg.ssl, cfg.model, backbone=modality.build_backbone(cfg))
    arrays = shared_arrays(model, cfg.transport_scope)
    checkpoint = outputs.load_checkpoint() if cfg.resume else None
    done = 0
    if checkpoint is not None:
        if set(checkpoint["arrays"]) != set(arrays):  # another encoder, method or transport-scope: not this run
            raise ValueError(f"cannot resume {outputs.root}: its checkpoint holds {len(checkpoint['arrays'])} arrays "
                             f"that are not the {len(arrays)} this run config trains (same 'model.*', 'ssl.method' "
                             "and 'transport-scope' as the run being resumed?)")
        arrays, done = checkpoint["arrays"], checkpoint["round"]
        log(logging.INFO, "[fedssl] resuming %s after round %d of %d", outputs.root, done, cfg.num_rounds)
    else:
        outputs.write_metrics()  # "running" on disk from the start: operators and the supervisor see the run
    log(logging.INFO, "[fedssl] outputs in %s", outputs.root.resolve())

    # 2. The strategy (verifying collapse on samples of the first task's gallery) and the per-round probes.
    tasks = modality.load_tasks(cfg)
    strategy = FedSSL(cfg, arrays, round_offset=done, verifier=CollapseVerifier.from_gallery(cfg, tasks[0].gallery))
    if checkpoint is not None:  # the step guard's norm history and previous global step survive a restart
        strategy.guard.load_state(checkpoint.get("step_guard", {}))
    evaluator = RoundEvaluator(cfg, strategy, outputs, tasks, observers=_observers(cfg, strategy, context.run_id))

    # 3. Flower runs the rounds that are left; a rule with a fold gets each reply as it arrives.
    log(logging.INFO, "[fedssl] aggregation %s: %s", cfg.aggregation.rule,
        "streamed (each reply folded in as it arrives)" if strategy.fold_builder is not None
        else "collected (every reply of a round at once)")
    if done < cfg.num_rounds:
        strategy.start(
            grid=StreamingGrid(grid) if strategy.fold_builder is not None else grid,
            initial_arrays=ArrayRecord(array_dict={k: Array(v) for k, v in arrays.items()}),
            num_rounds=cfg.num_rounds - done,
            timeout=cfg.round_timeout,
            train_config=ConfigRecord({"num-rounds": cfg.num_rounds}),
            evaluate_fn=evaluator,
        )
    outputs.finish(strategy.global_arrays)
    log(logging.INFO, "[fedssl] finished: %s", outputs.root / "encoder.pt")
    log(logging.INFO, "[fedssl] best model per task (best/<task>.pt) from %s", outputs.best_summary())


def _observers(cfg: RunConfig, strategy: FedSSL | SplitTrainer, run_id: int) -> list:
    """Listeners told about each finished round (the Prometheus exporter when a port is set)."""
    if not cfg.metrics_port:
        return []
    return [MetricsExporter.from_env(cfg, run_id, lambda: strategy.global_arrays, strategy.round_offset)]
