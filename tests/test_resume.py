"""Resuming a run: which folder `resume` names, and a history that keeps every resume and status change."""

import json

import pytest
import torch

from fedssl.config import RunConfig
from fedssl.round_record import RoundRecord
from fedssl.ssl import build_ssl_model
from fedssl.state import backbone_arrays
from server_app.app import run_directory
from server_app.outputs import CHECKPOINT, METRICS, RunOutputs


def finished_round(folder, flower_run_id: int, round_number: int, resume: str = "") -> RunOutputs:
    """A run that completed `round_number` and then died (a checkpoint, no final encoder)."""
    cfg = RunConfig.from_flat({"outputs-dir": str(folder.parent), "resume": resume})
    outputs = RunOutputs(folder, flower_run_id, cfg)
    if resume:
        outputs.load_checkpoint()
    torch.manual_seed(0)
    arrays = backbone_arrays(build_ssl_model(cfg.ssl, cfg.model))
    outputs.record_round(RoundRecord(round=round_number, sampled=2, available=2, knn={"fashion-mnist": 0.5}),
                         arrays, {})
    return outputs


@pytest.mark.parametrize("spelling", ["1234", "outputs/1234", "{root}/1234", "./outputs/1234/"])
def test_resume_accepts_a_run_id_or_a_path_relative_to_outputs_dir(tmp_path, monkeypatch, spelling):
    # Prepare: outputs-dir is an absolute folder (as /outputs in a container); the cwd has no outputs/.
    root = tmp_path / "outputs"
    (root / "1234").mkdir(parents=True)
    (root / "1234" / CHECKPOINT).write_bytes(b"x")
    monkeypatch.chdir(tmp_path / "outputs" / "1234")

    # Execute
    cfg = RunConfig.from_flat({"outputs-dir": str(root), "resume": spelling.format(root=root)})

    # Assert
    assert run_directory(cfg, run_id=99).resolve() == (root / "1234").resolve()


def test_a_wrong_resume_names_every_folder_it_looked_in(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = RunConfig.from_flat({"outputs-dir": str(tmp_path / "out"), "resume": "runs/77"})
    with pytest.raises(ValueError) as err:
        run_directory(cfg, run_id=99)
    message = str(err.value)
    assert "'resume' = 'runs/77'" in message
    for folder in (tmp_path / "out" / "runs" / "77", "runs/77", tmp_path / "out" / "77"):
        assert str(folder) in message


def test_a_fresh_run_uses_its_own_run_id(tmp_path):
    cfg = RunConfig.from_flat({"outputs-dir": str(tmp_path)})
    assert run_directory(cfg, run_id=5) == tmp_path / "5"


def test_two_resumes_keep_the_whole_history_and_a_failure_noted_in_between(tmp_path):
    # Prepare: run 10 dies after round 1; a supervisor notes the failure in metrics.json.
    folder = tmp_path / "10"
    finished_round(folder, 10, 1)
    metrics = json.loads((folder / METRICS).read_text())
    metrics["events"].append({"status": "failed", "at": 1.0, "flower_run_id": 10, "round": 1})
    (folder / METRICS).write_text(json.dumps(metrics))

    # Execute: run 11 resumes it and dies after round 2; run 12 resumes again and finishes.
    finished_round(folder, 11, 2, resume="10")
    last = RunOutputs(folder, 12, RunConfig.from_flat({"outputs-dir": str(tmp_path), "resume": "10"}))
    last.load_checkpoint()
    last.finish(torch.load(folder / CHECKPOINT, weights_only=False)["arrays"])

    # Assert: every resume and status change, in order, with the Flower run that made it.
    written = json.loads((folder / METRICS).read_text())
    assert written["resumed_at_round"] == [1, 2]
    assert [(e["status"], e["flower_run_id"], e["round"]) for e in written["events"]] == [
        ("started", 10, 0), ("failed", 10, 1), ("resumed", 11, 1), ("resumed", 12, 2), ("completed", 12, 2)]
    assert written["run_id"] == "10" and written["status"] == "completed"
    assert [r["round"] for r in written["rounds"]] == [1, 2]
