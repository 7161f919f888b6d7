"""Shared test setup: the real Fashion-MNIST package must be installed (scripts/install.sh does it).

Markers (``federation``, ``docker``) are registered in pyproject.toml; real federations come from
the product's launcher (``launcher/``).
"""

from __future__ import annotations

import time

import pytest


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    """The project's Docker images, built once per session (tests/compose_stack.py)."""
    from compose_stack import build_images

    return build_images()


@pytest.fixture(scope="session")
def stack(images: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    """docker/compose.yaml brought up with the README's two commands, shared by the compose tests."""
    from compose_stack import Stack, sh

    s = Stack(tmp_path_factory.mktemp("compose"))
    try:
        s.run("up", "-d", timeout=900)  # docker compose -f docker/compose.yaml up -d
        s.run("--profile", "monitoring", "up", "-d", timeout=900)  # ... --profile monitoring up -d
        s.wait_online(2)
        print(f"\n[docker] compose up to 2 SuperNodes online: {time.monotonic() - s.started:.0f} s")
        yield s
    except BaseException:
        print(s.logs())
        raise
    finally:
        s.down()
        leftovers = sh(["docker", "volume", "ls", "-q", "--filter", f"name={s.project}_"], check=False).stdout
        assert not leftovers.strip(), f"volumes left behind: {leftovers}"
