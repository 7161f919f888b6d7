"""The launcher of a real local deployment: its config strings, and its command line starting real processes."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import pytest
import tomllib

from launcher.cli import main
from launcher.deployment import CONNECTION
from launcher.flwr_cli import REPO, config_string, free_port, parse_config


def test_config_strings_round_trip_through_flowers_syntax():
    config = {"partition-id": 0, "alpha": 0.5, "filter.enabled": False, "data-dir": "/data/cam 0"}
    assert config_string(config) == "partition-id=0 alpha=0.5 filter.enabled=false data-dir='/data/cam 0'"
    assert parse_config(config_string(config)) == config
    assert parse_config("ssl.method=byol") == {"ssl.method": "byol"}  # a bare word is a string
    with pytest.raises(ValueError, match="key=value"):
        parse_config("num-rounds")


def test_free_port_is_free():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_a_bad_node_config_stops_the_command_before_anything_starts(tmp_path, capsys):
    assert main(["run", "--node-config", "partition-id", "--workdir", str(tmp_path)]) == 1
    assert "key=value" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # no log: nothing was started


@pytest.mark.federation
def test_the_command_line_runs_a_real_deployment_and_stops_it(tmp_path):
    # Execute: the documented command, as a user runs it
    workdir, outputs = tmp_path / "deploy", tmp_path / "outputs"
    out = subprocess.run([sys.executable, "-m", "launcher", "run", "--nodes", "2", "--smoke", "--workdir", str(workdir),
                          "--outputs", str(outputs), "--run-config", "num-rounds=1"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    # Assert: the run completed on both SuperNodes, the summary was printed, nothing is left running
    assert out.returncode == 0, out.stdout + out.stderr
    assert "finished:completed" in out.stdout and "kNN@" in out.stdout
    (run_dir,) = outputs.iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and len(metrics["rounds"]) == 1
    assert {c["partition-id"] for c in metrics["rounds"][0]["clients"]} == {0.0, 1.0}
    assert {p.name for p in workdir.glob("*.log")} == {"superlink.log", "supernode-0.log", "supernode-1.log"}
    connection = tomllib.loads((workdir / "flwr-home" / "config.toml").read_text())["superlink"][CONNECTION]
    port = int(connection["address"].rsplit(":", 1)[1])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # the SuperLink is gone


def start_up(workdir) -> tuple[subprocess.Popen, int]:
    """`fedssl-launch up --nodes 1` as a user starts it; returns it and its SuperLink's port once it is up."""
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "up", "--nodes", "1", "--workdir", str(workdir)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    while not any("Ctrl-C" in line for line in lines):
        line = proc.stdout.readline()
        if not line:
            proc.kill()
            raise AssertionError("exited before it was up:\n" + "".join(lines))
        lines.append(line)
    return proc, int("".join(lines).split("SuperLink 127.0.0.1:")[1].split(",")[0])


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.federation
def test_up_keeps_the_deployment_running_until_interrupted(tmp_path):
    # Prepare
    proc, port = start_up(tmp_path)
    try:
        assert listening(port)  # up, and stays up while nobody interrupts
        # Execute
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Assert
    assert proc.returncode == 0 and "stopped" in out
    assert not listening(port)


@pytest.mark.federation
def test_a_killed_launcher_takes_its_processes_with_it(tmp_path):
    # Prepare: a running deployment; its processes are in their own sessions (no terminal signal reaches them)
    proc, port = start_up(tmp_path)
    assert listening(port)
    # Execute: the launcher dies without a chance to clean up (OOM killer, kill -9, a killed test run)
    proc.kill()
    proc.wait(timeout=30)
    # Assert: the SuperLink and SuperNode got SIGTERM from the kernel and are gone within a minute
    def running() -> list[str]:  # the SuperNode names the SuperLink's address on its command line
        return subprocess.run(["pgrep", "-f", f"127.0.0.1:{port}"], capture_output=True, text=True).stdout.split()

    deadline = time.monotonic() + 90
    while (listening(port) or running()) and time.monotonic() < deadline:
        time.sleep(1)
    assert not listening(port)
    assert not running(), f"still running: {running()}"


def test_video_run_config_points_at_an_absolute_corpus_and_keeps_an_existing_one(tmp_path, monkeypatch):
    from fedssl.config import RunConfig
    from fedssl.data.manifest import MANIFEST
    from fedssl.data.video_corpus import CorpusSpec, make_corpus
    from launcher.cli import video_run_config

    make_corpus(tmp_path / "corpus", CorpusSpec(train_per_motion=1, test_per_motion=1))
    before = (tmp_path / "corpus" / MANIFEST).read_text()
    monkeypatch.chdir(tmp_path)
    config = video_run_config({"video.corpus-dir": "corpus", "num-rounds": 3}, smoke=True)
    assert config["video.corpus-dir"] == str(tmp_path / "corpus") and config["num-rounds"] == 3
    assert (tmp_path / "corpus" / MANIFEST).read_text() == before  # not remade
    cfg = RunConfig.from_flat(config)  # the preset is a valid video run
    assert (cfg.data.modality, cfg.video.encoder, cfg.model.embedding_dim) == ("video", "r3d-tiny", 80)
    assert main(["run", "--audio", "--video"]) == 1
