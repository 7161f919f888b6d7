"""CI smoke of the benchmark suite: ``python -m bench.run --quick`` writes every result file, well-formed.

No timing is asserted (speed is what the suite reports, not what a test checks).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.render import BEGIN, END, TITLES, update_readme
from bench.results import goal, validate, write_result
from bench.run import BENCHMARKS, NEEDS, available, result_keys

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-quick")
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--results-dir", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=3600)
    return out, proc


@pytest.mark.federation
def test_the_quick_suite_exits_cleanly(quick_run):
    _, proc = quick_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


@pytest.mark.federation
@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_every_benchmark_writes_a_well_formed_result(quick_run, name):
    if not available(name):
        pytest.skip(f"{NEEDS.get(name, BENCHMARKS[name])} does not exist yet (a reported gap)")
    out, _ = quick_run
    data = json.loads((out / f"{name}.json").read_text())
    assert validate(data, result_keys(name)) == []
    assert data["benchmark"] == name and data["quick"] is True
    assert data["goals"] and data["results"]


@pytest.mark.federation
def test_the_tables_have_a_section_per_benchmark(quick_run):
    out, _ = quick_run
    text = (out / "RESULTS.md").read_text()
    for name, title in TITLES.items():
        assert title in text
        if available(name):
            assert f"### {title}\n\n*quick mode" in text  # rendered from this run, not "No results"


def test_validate_flags_missing_keys_and_non_finite_numbers():
    good = {"benchmark": "x", "quick": True, "machine": {}, "seconds": 1.0, "load_avg_end": 0.5, "reference": "r",
            "goals": [goal("g", "t", 0.1, True)], "results": {"a": [1, 2.5, None]}}
    assert validate(good, ("a",)) == []
    assert validate({**good, "results": {"a": [1, math.nan]}}, ("a",)) == ["non-finite number at $.results.a[1]"]
    assert validate({**good, "results": {}}, ("a",)) == ["results lacks 'a'"]
    assert validate({k: v for k, v in good.items() if k != "goals"}) == ["missing key 'goals'"]
    assert validate({**good, "goals": [{"name": "g"}]})[0] == "goal 'g' lacks 'target'"


def test_result_files_refuse_non_finite_numbers(tmp_path):
    with pytest.raises(ValueError):
        write_result(tmp_path / "x.json", {"value": math.inf})
    assert not (tmp_path / "x.json").exists()


@pytest.mark.federation
def test_the_readme_goals_block_has_a_row_per_goal_and_names_its_machine(quick_run, tmp_path):
    out, _ = quick_run
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nSTALE-BLOCK-LINE\n{END}\noutro\n")
    update_readme(readme, out, list(BENCHMARKS), goals_only=True)
    text = readme.read_text()
    goals = [g for name in BENCHMARKS if (out / f"{name}.json").is_file()
             for g in json.loads((out / f"{name}.json").read_text())["goals"]]
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| #")]
    assert len(rows) == len(goals) and "STALE-BLOCK-LINE" not in text
    assert text.startswith("intro\n") and text.endswith("outro\n") and "Machine: " in text


def test_the_plain_loop_of_client_speed_sees_the_batches_train_round_trains_on():
    """Section 1b compares CPU time only if both arms do the same work: equal mean losses prove equal batches."""
    import torch
    from flwr.app import Array, ArrayRecord

    from bench.bench_client_speed import QUICK, _config, ours_round, plain
    from fedssl.ssl import build_ssl_model
    from fedssl.state import backbone_arrays, strip_prefix, to_torch

    threads = torch.get_num_threads()
    try:
        cfg = _config(QUICK)
        torch.manual_seed(cfg.seed)
        arrays = backbone_arrays(build_ssl_model(cfg.ssl, cfg.model))
        ours = ours_round(cfg, ArrayRecord(array_dict={k: Array(v) for k, v in arrays.items()}), threads=1)
        reference = plain(cfg, strip_prefix(to_torch(arrays)), threads=1)
    finally:
        torch.set_num_threads(threads)
    assert ours["steps"] == reference["steps"] == QUICK["samples"] // QUICK["batch_size"]
    assert ours["images"] == reference["images"]
    assert abs(ours["loss"] - reference["loss"]) < 1e-4
