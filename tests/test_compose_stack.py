"""docker/compose.yaml with a real Docker engine: the README's commands, a federation over TLS with
SuperNode authentication, monitoring through Prometheus, a SuperNode lost mid-run, a rogue key.

The images are built on the air-gapped base (docker/build-base.sh, cached); the stack is shared
with tests/test_compose_faults.py (fixtures in tests/conftest.py) and torn down with `down -v`.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from compose_stack import (
    COMPOSE_FILE,
    COMPOSE_RUN,
    DOCKER_DIR,
    EXPOSE_FILE,
    FEDERATION,
    REPO,
    Stack,
    docker_ready,
    load_script,
    sh,
    wait_finished,
)

pytestmark = pytest.mark.docker


@pytest.mark.parametrize("compose", [["docker-compose"], ["docker", "compose"]], ids=["v1.29", "v2"])
def test_compose_file_is_valid_for_both_compose_versions(compose: list[str]) -> None:
    docker_ready()
    if sh([*compose, "version"], check=False).returncode != 0:
        pytest.skip(f"{' '.join(compose)} is not installed (docker/ci-setup.sh installs both)")
    default = yaml.safe_load(sh([*compose, "-f", str(COMPOSE_FILE), "config"], cwd=REPO).stdout)
    started_by_up = set(FEDERATION) | {"credentials", "register-supernodes"}
    assert started_by_up <= set(default["services"])
    for name in set(default["services"]) - started_by_up:  # docker-compose 1.29 lists profiled services too
        assert default["services"][name].get("profiles"), f"{name} would start with a plain `up`"
    assert "ports" not in default["services"]["superlink"]
    grafana = yaml.safe_load(sh([*compose, "-f", str(COMPOSE_FILE), "--profile", "grafana", "config"],
                                cwd=REPO).stdout)
    assert {"prometheus", "grafana"} <= set(grafana["services"])
    volumes = grafana["services"]["prometheus"]["volumes"]
    sources = [v["source"] if isinstance(v, dict) else v.split(":")[0] for v in volumes]
    assert str(DOCKER_DIR / "monitoring" / "prometheus") in sources  # docker/monitoring/, relative to docker/
    exposed = yaml.safe_load(sh([*compose, "-f", str(COMPOSE_FILE), "-f", str(EXPOSE_FILE), "config"],
                                cwd=REPO).stdout)
    ports = exposed["services"]["superlink"]["ports"]
    target = ports[0]["target"] if isinstance(ports[0], dict) else ports[0].split(":")[-1]  # v2 / v1.29
    assert len(ports) == 1 and str(target).split("/")[0] == "8000"


def test_a_run_over_tls_with_node_auth_watched_by_prometheus_survives_a_lost_supernode(stack: Stack) -> None:
    # Prepare: both SuperNodes are online (the fixture waited); the credentials stayed in volumes.
    # One run covers both stories (each compose run costs minutes on 2 cores): round 1 from both
    # SuperNodes over TLS with node auth, then supernode-1 stops for good and the run goes on.
    assert sorted(n["status"] for n in stack.nodes()) == ["online", "online"]
    first_round: list[float] = []
    started = time.monotonic()

    # Execute: a tiny run submitted the README's way; Prometheus (monitoring profile) scrapes the
    # exporter inside the network, the only place it can be reached. Once round 1 is in, supernode-1
    # and its SuperExec stop.
    run_id = stack.submit({**COMPOSE_RUN, "num-rounds": 3, "min-train-nodes": 1, "round-timeout": 600.0})

    def poll() -> None:
        if not first_round and (stack.metrics(run_id) or {}).get("rounds"):
            first_round.append(time.monotonic())
            stack.run("stop", "-t", "10", "supernode-1", "superexec-clientapp-1")

    status = wait_finished(stack, run_id, timeout=900, on_poll=poll)
    if first_round:
        print(f"\n[docker] first round: {first_round[0] - started:.0f} s after submit, "
              f"{first_round[0] - stack.started:.0f} s after `compose up`; "
              f"whole run {time.monotonic() - started:.0f} s")

    # Assert: Flower's status (`flwr run` exits 0 even on a crash), the output volume, Prometheus.
    assert status == "finished:completed", stack.logs()
    metrics = stack.metrics(run_id)
    assert metrics["status"] == "completed"
    assert [r["round"] for r in metrics["rounds"]] == [1, 2, 3]
    replied = [r["replied"] for r in metrics["rounds"]]
    assert replied[0] == 2 and replied[-1] == 1, replied  # both over TLS first; then supernode-1 really was gone
    assert [e["status"] for e in metrics["events"]] == ["started", "completed"]
    listing = stack.run("exec", "-T", "superexec-serverapp", "ls", f"/outputs/{run_id}").stdout.split()
    assert {"metrics.json", "checkpoint.pt", "encoder.pt"} <= set(listing)
    assert sorted(n["status"] for n in stack.nodes()) == ["offline", "online"]
    # The exporter lingers after the last round until a scrape saw it, then the series goes stale:
    # ask for the highest value Prometheus stored, not for the value "now".
    query, scraped = "max_over_time(fedssl_rounds_completed_total[30m])", []
    deadline = time.monotonic() + 60
    while 3.0 not in scraped and time.monotonic() < deadline:
        scraped = [float(r["value"][1]) for r in stack.prometheus(query)]
        time.sleep(2)
    assert 3.0 in scraped, f"Prometheus never scraped the final round: {scraped}\n{stack.logs('prometheus')}"
    stack.up("supernode-1", "superexec-clientapp-1")  # leave the stack whole for the next tests
    stack.wait_online(2)


def test_unregistered_supernode_is_refused(stack: Stack, images: dict[str, str], tmp_path: Path) -> None:
    # Prepare: a fresh key pair the SuperLink has never seen, readable by the image's user.
    private, _ = load_script("credentials").supernode_key("rogue")
    (tmp_path / "rogue").write_bytes(private)
    (tmp_path / "rogue").chmod(0o444)
    tmp_path.chmod(0o755)
    before = {n["node-id"] for n in stack.nodes()}

    # Execute: a SuperNode with that key, on the stack's network, with the stack's CA.
    out = sh(["docker", "run", "--rm", "--network", f"{stack.project}_default",
              "-v", f"{stack.project}_ca:/etc/fedssl/ca:ro", "-v", f"{tmp_path}:/etc/fedssl/keys:ro",
              images["supernode"], "--superlink", "superlink:8000", "--root-certificates", "/etc/fedssl/ca/ca.crt",
              "--auth-supernode-private-key", "/etc/fedssl/keys/rogue", "--max-retries", "0"],
             timeout=300, check=False)

    # Assert: it gives up with an error, and the SuperLink's node list has not grown.
    log = out.stdout + out.stderr
    assert out.returncode != 0, log
    assert "Failed to activate SuperNode" in log, log  # not a TLS or network failure: the key was refused
    assert {n["node-id"] for n in stack.nodes()} == before
