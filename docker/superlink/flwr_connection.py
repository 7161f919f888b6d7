#!/usr/bin/env python3
"""`fedssl-flwr ARGS...`: the flwr CLI inside the compose network, connection "fedssl" preset.

Writes ``$FLWR_HOME/config.toml`` with a TLS connection named ``fedssl`` to ``$FEDSSL_SUPERLINK``
(default ``superlink:8000``) that trusts ``$FEDSSL_CA`` (default ``/etc/fedssl/ca/ca.crt``), then
runs ``flwr ARGS...``. Used by the `flwr` and `register-supernodes` services of docker/compose.yaml:

    docker compose -f docker/compose.yaml run --rm flwr ls fedssl
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CONNECTION = "fedssl"


def write_connection(flwr_home: Path, superlink: str, ca: str) -> Path:
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    path.write_text(f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
                    f'address = "{superlink}"\nroot-certificates = "{ca}"\n')
    return path


def main() -> None:
    write_connection(Path(os.environ.get("FLWR_HOME", Path.home() / ".flwr")),
                     os.environ.get("FEDSSL_SUPERLINK", "superlink:8000"),
                     os.environ.get("FEDSSL_CA", "/etc/fedssl/ca/ca.crt"))
    os.execvp("flwr", ["flwr", *sys.argv[1:]])


if __name__ == "__main__":
    main()
