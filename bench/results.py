"""The contract of a result file: ``<results-dir>/<benchmark>.json``, written atomically, checked on read.

Every file has the same envelope (``ENVELOPE_KEYS``): which benchmark, quick or full mode, the machine
and its load, the benchmark's wall time, its goals (target, measured value, met or not) and its
``results``. Numbers must be finite; ``None`` marks a case that was not run, with a reason beside it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ENVELOPE_KEYS = ("benchmark", "quick", "machine", "seconds", "load_avg_end", "goals", "reference", "results")
GOAL_KEYS = ("name", "target", "value", "met", "note")


UNITS = ("percent", "ratio", "times", "points", "updates")


def goal(name: str, target: str, value: float | None, met: bool | None, note: str = "",
         unit: str = "ratio") -> dict[str, Any]:
    """One goal of the issue: ``value`` is measured (None when not), ``met`` None when the issue sets no target.

    ``unit`` says how to print ``value``: ``percent`` (0.05 -> +5.0 %), ``ratio``, ``times`` (x),
    ``points`` (a kNN difference) or ``updates`` (memory in update sizes).
    Raises:
        ValueError: for an unknown unit.
    """
    if unit not in UNITS:
        raise ValueError(f"unit = {unit!r} is not one of {list(UNITS)}")
    return {"name": name, "target": target, "value": value, "met": met, "note": note, "unit": unit}


def write_result(path: Path, data: Mapping[str, Any]) -> Path:
    """Write JSON atomically (a reader never sees half a file); non-finite floats are refused.

    Raises:
        ValueError: if ``data`` holds NaN or infinity (the file would not be portable JSON).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, allow_nan=False)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)
    return path


def non_finite(value: Any, where: str = "$") -> list[str]:
    """Paths of every NaN/inf number inside ``value`` (booleans and None are fine)."""
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, (int, float)):
        return [] if math.isfinite(value) else [where]
    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in non_finite(v, f"{where}.{k}")]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in non_finite(v, f"{where}[{i}]")]
    return []


def validate(data: Mapping[str, Any], result_keys: Iterable[str] = ()) -> list[str]:
    """Problems with one result file (empty when well-formed)."""
    problems = [f"missing key {k!r}" for k in ENVELOPE_KEYS if k not in data]
    if problems:
        return problems
    if not isinstance(data["quick"], bool):
        problems.append("'quick' is not a boolean")
    for g in data["goals"]:
        problems += [f"goal {g.get('name')!r} lacks {k!r}" for k in GOAL_KEYS if k not in g]
    problems += [f"results lacks {k!r}" for k in result_keys if k not in data["results"]]
    problems += [f"non-finite number at {p}" for p in non_finite(data)]
    return problems


def read_result(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
