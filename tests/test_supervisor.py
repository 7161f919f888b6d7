"""docker/superlink/supervisor.py: which run folders get resumed, and what metrics.json then says.

The policy is tested here on real run folders written by the ServerApp's own RunOutputs; the
SuperLink's answers are given as plain dicts (the real SuperLink path is the compose fault test).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch

from fedssl.config import RunConfig
from fedssl.round_record import RoundRecord
from fedssl.ssl import build_ssl_model
from fedssl.state import backbone_arrays
from server_app.outputs import RunOutputs

SCRIPT = Path(__file__).resolve().parents[1] / "docker" / "superlink" / "supervisor.py"
spec = importlib.util.spec_from_file_location("supervisor", SCRIPT)
supervisor = importlib.util.module_from_spec(spec)
sys.modules["supervisor"] = supervisor  # dataclasses look their module up by name
spec.loader.exec_module(supervisor)


def run_folder(root: Path, flower_run_id: int, rounds: int, quiet_s: float = 3600) -> Path:
    """A run that completed `rounds` rounds and stopped writing `quiet_s` seconds ago."""
    cfg = RunConfig.from_flat({"outputs-dir": str(root), "num-rounds": 5, "train.lr": 0.003})
    outputs = RunOutputs(root / str(flower_run_id), flower_run_id, cfg)
    outputs.write_metrics()
    torch.manual_seed(0)
    arrays = backbone_arrays(build_ssl_model(cfg.ssl, cfg.model))
    for number in range(1, rounds + 1):
        outputs.record_round(RoundRecord(round=number, sampled=2, available=2), arrays, {})
    past = time.time() - quiet_s
    os.utime(outputs.root / "metrics.json", (past, past))
    return outputs.root


def metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def test_a_failed_run_with_a_checkpoint_is_resubmitted_with_its_own_config(tmp_path):
    # Prepare: run 4 died after round 2.
    folder = run_folder(tmp_path, 4, rounds=2)
    submitted: list[tuple[str, str]] = []

    # Execute
    new = supervisor.supervise_once(tmp_path, "/app", grace_s=30, max_resumes=3,
                                    statuses=lambda: {4: "finished:failed"},
                                    resubmit=lambda app, overrides: submitted.append((app, overrides)) or 9,
                                    say=lambda line: None)

    # Assert: one resubmission of the same config plus resume='4'; both steps noted.
    assert new == [9] and len(submitted) == 1
    app, overrides = submitted[0]
    assert app == "/app" and "resume=\"4\"" in overrides
    assert "num-rounds=5" in overrides and "train.lr=0.003" in overrides and "train.channels-last=true" in overrides
    events = [(e["status"], e["flower_run_id"], e["round"]) for e in metrics(folder)["events"]]
    assert events == [("started", 4, 0), ("failed", 4, 2), ("resubmitted", 9, 2)]
    assert metrics(folder)["status"] == "running"


@pytest.mark.parametrize("status, quiet_s, rounds, expected", [
    ("running", 3600, 2, "wait"),            # alive
    ("pending", 3600, 2, "wait"),
    ("finished:stopped", 3600, 2, "skip"),   # stopped on purpose
    ("finished:failed", 5, 2, "wait"),       # metrics.json still changing: a ServerApp may still write
    ("finished:failed", 3600, 0, "skip"),    # no checkpoint: nothing to resume from
    ("", 3600, 2, "resume"),                 # the SuperLink lost the run (its state is gone)
])
def test_decision_per_flower_status(tmp_path, status, quiet_s, rounds, expected):
    folder = run_folder(tmp_path, 4, rounds=rounds, quiet_s=quiet_s)
    flower = {4: status} if status else {}
    decision = supervisor.decide(folder, metrics(folder), flower, time.time(), grace_s=30, max_resumes=3)
    assert decision.action == expected, decision


def test_resumes_without_progress_end_in_giving_up(tmp_path):
    folder = run_folder(tmp_path, 4, rounds=2)
    ids = iter(range(10, 20))
    calls = []
    for _ in range(5):  # every resubmitted run fails again without finishing a round
        current = metrics(folder)["events"][-1]["flower_run_id"]
        os.utime(folder / "metrics.json", (time.time() - 3600,) * 2)
        calls += supervisor.supervise_once(tmp_path, "/app", grace_s=30, max_resumes=3,
                                           statuses=lambda current=current: {current: "finished:failed"},
                                           resubmit=lambda app, overrides: next(ids), say=lambda line: None)
    assert calls == [10, 11, 12]
    final = metrics(folder)
    assert final["status"] == "failed"
    assert "3 resumes after round 2 made no progress" in final["events"][-1]["reason"]


def test_completed_and_unreadable_folders_are_left_alone(tmp_path):
    done = run_folder(tmp_path, 4, rounds=2)
    data = metrics(done)
    data["status"] = "completed"
    (done / "metrics.json").write_text(json.dumps(data))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "metrics.json").write_text("{not json")
    asked = []
    assert supervisor.supervise_once(tmp_path, "/app", 30, 3, statuses=lambda: asked.append(1) or {},
                                     resubmit=lambda *a: 1 / 0, say=print) == []
    assert asked == []  # nothing running: the SuperLink is not even asked


def test_toml_values_round_trip_through_a_toml_parser():
    import tomllib

    for value in (True, 3, 0.002, "fedavg", "a 'quoted' \"string\"", ""):
        assert tomllib.loads(f"k = {supervisor.toml_value(value)}")["k"] == value


def test_a_refused_resubmission_notes_nothing_and_is_retried(tmp_path):
    folder = run_folder(tmp_path, 4, rounds=2)

    def refuse(app, overrides):
        raise RuntimeError("Connection to the SuperLink is unavailable")

    with pytest.raises(RuntimeError):
        supervisor.supervise_once(tmp_path, "/app", 30, 3, statuses=lambda: {4: "finished:failed"},
                                  resubmit=refuse, say=print)
    assert [e["status"] for e in metrics(folder)["events"]] == ["started"]
    os.utime(folder / "metrics.json", (time.time() - 3600,) * 2)
    assert supervisor.supervise_once(tmp_path, "/app", 30, 3, statuses=lambda: {4: "finished:failed"},
                                     resubmit=lambda app, overrides: 5, say=print) == [5]
    assert [e["status"] for e in metrics(folder)["events"]] == ["started", "failed", "resubmitted"]
