"""Shared test setup: the real Fashion-MNIST package must be installed (scripts/install.sh does it).

Markers (``federation``, ``docker``) are registered in pyproject.toml; real federations come from
the product's launcher (``launcher/``).

The compose tests run first, on a machine nothing else is loading yet: a starved CPU makes the
containers' ClientApps miss Flower's 30 s task token (docs/docker.md). The fault test comes after
the other compose tests, as it stops and kills parts of the shared stack. The stack is torn down
as soon as the last test that uses it is done, not at the end of the session, so its idle
containers do not slow the federation tests that follow.
"""

from __future__ import annotations

import time

import pytest

STACK_FIRST = ("test_compose_stack.py", "test_compose_faults.py")  # the order the compose tests run in


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return STACK_FIRST.index(name) if name in STACK_FIRST else len(STACK_FIRST)

    items.sort(key=rank)  # stable: every other test keeps its place


_stacks: list = []  # the running compose stack, if any (at most one)
_stack_failures: list[str] = []  # compose tests that failed: the stack may be broken for the ones after


def pytest_runtest_setup(item: pytest.Item) -> None:
    if _stack_failures and "stack" in getattr(item, "fixturenames", ()):
        pytest.fail(f"not run: the shared compose stack may be broken since {_stack_failures[0]} failed "
                    "(its logs are in that failure); each compose test waits minutes, so CI's time limit would pass")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed and call.when == "call" and "stack" in getattr(item, "fixturenames", ()):
        _stack_failures.append(item.nodeid)
    return report


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if _stacks and (nextitem is None or "stack" not in getattr(nextitem, "fixturenames", ())):
        stop_stack(_stacks.pop())


def stop_stack(stack) -> None:
    from compose_stack import sh

    stack.down()
    leftovers = sh(["docker", "volume", "ls", "-q", "--filter", f"name={stack.project}_"], check=False).stdout
    assert not leftovers.strip(), f"volumes left behind: {leftovers}"


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    """The project's Docker images, built once per session (tests/compose_stack.py)."""
    from compose_stack import build_images

    return build_images()


@pytest.fixture(scope="session")
def stack(images: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    """docker/compose.yaml brought up with the README's two commands, shared by the compose tests.

    Stopped by :func:`pytest_runtest_teardown` after the last test that uses it (or here, at the
    end of the session, if that never ran).
    """
    from compose_stack import Stack

    s = Stack(tmp_path_factory.mktemp("compose"))
    _stacks.append(s)
    try:
        s.run("up", "-d", timeout=900)  # docker compose -f docker/compose.yaml up -d
        s.run("--profile", "monitoring", "up", "-d", timeout=900)  # ... --profile monitoring up -d
        s.wait_online(2)
        print(f"\n[docker] compose up to 2 SuperNodes online: {time.monotonic() - s.started:.0f} s")
    except BaseException:
        print(s.logs())
        raise
    yield s
    if s in _stacks:
        _stacks.remove(s)
        stop_stack(s)
