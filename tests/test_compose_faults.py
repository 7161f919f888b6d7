"""Faults in the compose federation, healed without a person: the supervisor resumes the run.

A short run loses a SuperNode's and its ServerApp's containers (killed from the host, as the OOM
killer would) and later the SuperLink for longer than Flower's heartbeat limit. The run must complete every round,
with continuous round numbers, a final encoder, and every failure and resume in metrics.json.
Measured times are printed (docs/docker.md, "Faults and recovery", quotes them).
"""

from __future__ import annotations

import time

import pytest
from compose_stack import COMPOSE_RUN, Stack, sh

pytestmark = pytest.mark.docker

OUTAGE_S = 75  # longer than Flower's heartbeat limit: the run is marked failed while the SuperLink is down


def wait_until(stack: Stack, what: str, check, timeout: float = 600) -> float:
    """Seconds until ``check()`` holds; fails with the stack's logs after ``timeout``."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"{what}: not after {timeout}s\n{stack.logs()}"
        time.sleep(3)
    return time.monotonic() - started


def crash(stack: Stack, service: str) -> None:
    """SIGKILL the container's main process from the host: a crash, so its restart policy applies."""
    container = stack.run("ps", "-q", service).stdout.strip()
    pid = sh(["docker", "inspect", "-f", "{{.State.Pid}}", container]).stdout.strip()
    sh(["kill", "-9", pid])


def test_a_run_survives_killed_containers_and_a_long_superlink_outage(stack: Stack) -> None:
    # Prepare: both SuperNodes online; a 5-round run that needs both of them.
    stack.wait_online(2)
    folder = stack.submit({**COMPOSE_RUN, "num-rounds": 5, "min-train-nodes": 2, "metrics-port": 0})

    def rounds() -> list[int]:
        return [r["round"] for r in (stack.metrics(folder) or {}).get("rounds", [])]

    def events(status: str) -> int:
        return sum(e["status"] == status for e in (stack.metrics(folder) or {}).get("events", []))

    # Execute 1: once round 1 is in, a SuperNode's container crashes (its restart policy brings it
    # back under the same node id) and so does the ServerApp's; the supervisor resumes the run.
    wait_until(stack, "round 1", lambda: len(rounds()) >= 1)
    crash(stack, "supernode-1")
    crash(stack, "superexec-serverapp")
    healed = wait_until(stack, "resume after the ServerApp crash", lambda: events("resumed") >= 1)
    print(f"\n[docker] ServerApp killed after round {rounds()[-1] if rounds() else 0}: resumed {healed:.0f} s later")

    # Execute 2: once the resumed run has finished a round of its own, the SuperLink goes away for 75 s.
    done = len(rounds())
    wait_until(stack, "a round after the resume", lambda: len(rounds()) > done)
    stack.run("stop", "-t", "5", "superlink")
    time.sleep(OUTAGE_S)
    stack.run("start", "superlink")
    back = time.monotonic()
    resumes_before = events("resumed")
    wait_until(stack, "run completed", lambda: (stack.metrics(folder) or {}).get("status") == "completed",
               timeout=900)
    print(f"[docker] SuperLink down {OUTAGE_S} s: completed {time.monotonic() - back:.0f} s after it came back, "
          f"with {events('resumed') - resumes_before} more resume(s)")

    # Assert: every round once and in order, the final encoder, and the history of what happened.
    metrics = stack.metrics(folder)
    assert rounds() == [1, 2, 3, 4, 5]
    assert metrics["status"] == "completed" and metrics["run_id"] == str(folder)
    assert "encoder.pt" in stack.run("exec", "-T", "supervisor", "ls", f"/outputs/{folder}").stdout.split()
    statuses = [e["status"] for e in metrics["events"]]
    assert statuses[0] == "started" and statuses[-1] == "completed"
    assert statuses.count("failed") == statuses.count("resubmitted") == statuses.count("resumed") >= 1
    assert len(metrics["resumed_at_round"]) == statuses.count("resumed")
    last_run = metrics["events"][-1]["flower_run_id"]  # its ServerApp wrote "completed" and is exiting
    wait_until(stack, f"Flower marks run {last_run} completed", lambda: stack.status(last_run).startswith("finished"),
               timeout=300)
    assert stack.status(last_run) == "finished:completed"
    stack.wait_online(2)  # the crashed SuperNode is back
