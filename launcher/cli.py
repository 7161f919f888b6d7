"""``fedssl-launch`` (``python -m launcher``): a real local deployment from one command.

What the README's "Running on a real deployment" does by hand: a SuperLink, N SuperNodes (each a
Fashion-MNIST shard, or the node configs you give), the connection in a private FLWR_HOME,
``flwr run``, and teardown of everything it started.

    fedssl-launch run --nodes 3 --run-config "num-rounds=3 ssl.method='byol'"
    fedssl-launch run --smoke                       # 2 tiny rounds: proves the plumbing
    fedssl-launch run --node-config "data-dir='/data/cam0'" --node-config "data-dir='/data/cam1'"
    fedssl-launch up --nodes 3                      # keep it running; submit with the printed flwr command
    fedssl-launch run --audio                       # the same on audio (makes data/audio-corpus if missing)
    fedssl-launch run --video                       # the same on video clips (makes data/video-corpus if missing)

``run`` exits 0 only if the run finished ``completed``; it prints the run's summary (``fedssl-summary``).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
from pathlib import Path

from fedssl.summary import summarize
from launcher.deployment import LocalDeployment
from launcher.flwr_cli import AUDIO_RUN, REPO, TINY_AUDIO_RUN, TINY_RUN, TINY_VIDEO_RUN, VIDEO_RUN, parse_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedssl-launch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("run", "start, run once, print the summary, stop everything"),
                       ("up", "start and keep running until Ctrl-C; submit runs yourself with flwr run")):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--nodes", type=int, default=3, help="SuperNodes, one Fashion-MNIST shard each (default 3)")
        p.add_argument("--node-config", action="append", default=[], metavar="CFG",
                       help="one SuperNode with this node config (repeat per node; replaces --nodes), "
                            "e.g. \"data-dir='/data/cam0'\"")
        p.add_argument("--workdir", type=Path, default=None,
                       help="logs and FLWR_HOME (default: a new folder under /tmp, kept)")
        p.add_argument("--app", type=Path, default=REPO, help="the Flower app folder (default: this project)")
        p.add_argument("--outputs", type=Path, default=Path("outputs"), help="run config outputs-dir (default outputs)")
        if name == "run":
            p.add_argument("--run-config", default="", metavar="CFG", help="run-config overrides, as for flwr run")
            p.add_argument("--smoke", action="store_true", help="start from the tiny 2-round run config")
            p.add_argument("--audio", action="store_true",
                           help="data.modality='audio' with its tasks and encoder size (launcher.flwr_cli.AUDIO_RUN); "
                                "simulated nodes train on shards of the generated corpus, made if missing")
            p.add_argument("--video", action="store_true",
                           help="data.modality='video' with its tasks and encoder (launcher.flwr_cli.VIDEO_RUN); "
                                "simulated nodes train on shards of the generated clip corpus, made if missing")
            p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the run")
    return parser


def deployment_from(args: argparse.Namespace) -> LocalDeployment:
    """The deployment the arguments describe (not started).

    Raises:
        ValueError: for a malformed ``--node-config`` or fewer than one node.
    """
    node_configs = [parse_config(text) for text in args.node_config] or None
    if node_configs is None and args.nodes < 1:
        raise ValueError(f"--nodes = {args.nodes} must be >= 1")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fedssl-launch-"))
    return LocalDeployment(workdir, nodes=args.nodes, node_configs=node_configs, app=args.app, outputs=args.outputs)


def audio_run_config(overrides: dict, smoke: bool) -> dict:
    """``AUDIO_RUN`` (or its tiny variant) with an absolute ``audio.corpus-dir``; the corpus is made if missing."""
    from fedssl.data.audio_corpus import make_corpus
    from fedssl.data.manifest import MANIFEST

    config = {**(TINY_AUDIO_RUN if smoke else AUDIO_RUN), **overrides}
    corpus = Path(config.get("audio.corpus-dir", "data/audio-corpus")).expanduser().resolve()
    if not (corpus / MANIFEST).is_file():
        print(f"[fedssl-launch] making the audio corpus in {corpus} (scripts/make_audio_corpus.py)", flush=True)
        make_corpus(corpus)
    return {**config, "audio.corpus-dir": str(corpus)}


def video_run_config(overrides: dict, smoke: bool) -> dict:
    """``VIDEO_RUN`` (or its tiny variant) with an absolute ``video.corpus-dir``; the corpus is made if missing."""
    from fedssl.data.manifest import MANIFEST
    from fedssl.data.video_corpus import make_corpus

    config = {**(TINY_VIDEO_RUN if smoke else VIDEO_RUN), **overrides}
    corpus = Path(config.get("video.corpus-dir", "data/video-corpus")).expanduser().resolve()
    if not (corpus / MANIFEST).is_file():
        print(f"[fedssl-launch] making the video corpus in {corpus} (scripts/make_video_corpus.py)", flush=True)
        make_corpus(corpus)
    return {**config, "video.corpus-dir": str(corpus)}


def run(args: argparse.Namespace) -> int:
    overrides = parse_config(args.run_config)
    if args.audio and args.video:
        raise ValueError("--audio and --video are two modalities; pick one")
    if args.video:
        run_config = video_run_config(overrides, args.smoke)
    elif args.audio:
        run_config = audio_run_config(overrides, args.smoke)
    else:
        run_config = {**(TINY_RUN if args.smoke else {}), **overrides}
    fed = deployment_from(args)
    print(f"[fedssl-launch] SuperLink {fed.address} + {len(fed.node_configs)} SuperNodes; logs in {fed.workdir}",
          flush=True)
    with fed:
        fed.wait_for_nodes()
        run_id = fed.submit(run_config)
        print(f"[fedssl-launch] run {run_id} submitted; waiting (flwr ls {fed.connection})", flush=True)
        status = fed.wait(run_id, args.timeout)
    print(f"[fedssl-launch] run {run_id}: {status}", flush=True)
    metrics = fed.outputs / str(run_id) / "metrics.json"
    if metrics.is_file():
        print(summarize(json.loads(metrics.read_text())))
        print(f"outputs: {metrics.parent}")
    if status != "finished:completed":
        print(fed.logs(), file=sys.stderr)
        return 1
    return 0


def up(args: argparse.Namespace) -> int:
    fed = deployment_from(args)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a shell's background job ignores it by default
        signal.signal(signum, lambda *_: stop.set())
    with fed:
        online = fed.wait_for_nodes()
        print(f"[fedssl-launch] SuperLink {fed.address}, {online} SuperNodes online; logs in {fed.workdir}\n"
              f"submit a run:\n  FLWR_HOME={fed.home} FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 "
              f"flwr run {fed.app} {fed.connection} --stream --run-config \"outputs-dir='{fed.outputs.resolve()}'\"\n"
              f"Ctrl-C stops everything.", flush=True)
        stop.wait()
    print("[fedssl-launch] stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args) if args.command == "run" else up(args)
    except (ValueError, TimeoutError, RuntimeError) as exc:
        print(f"fedssl-launch: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
