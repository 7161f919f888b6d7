#!/usr/bin/env python3
"""Register SuperNode public keys with a SuperLink that runs `--enable-supernode-auth`.

The one-shot `register-supernodes` service of docker/compose.yaml: after the SuperLink is
healthy, every ``<name>.pub`` in KEYS_DIR is passed to ``flwr supernode register`` over the
TLS Control API (through ``fedssl-flwr``, which sets up the connection). A key the
SuperLink already knows ("Public key already in use") counts as registered, so a second
`up` is a no-op. Any other failure exits non-zero and the SuperNodes,
which wait for this service to complete, do not start.

    fedssl-register-supernodes /etc/fedssl/ca/supernodes
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ALREADY = "already in use"  # Flower's answer to a key it has registered before


def register(public_key: Path) -> str:
    """``registered as <id>``, ``already registered``; raises RuntimeError otherwise."""
    out = subprocess.run(["fedssl-flwr", "supernode", "register", str(public_key), "fedssl", "--format", "json"],
                         capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    if out.returncode == 0:
        try:
            return f"registered as node {json.loads(out.stdout.strip().splitlines()[-1])['node-id']}"
        except (ValueError, KeyError, IndexError):
            return "registered"
    if ALREADY in text.lower():
        return "already registered"
    raise RuntimeError(f"flwr supernode register {public_key} failed ({out.returncode}):\n{text}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("keys", type=Path, help="folder of <name>.pub OpenSSH public keys")
    args = parser.parse_args()
    keys = sorted(args.keys.glob("*.pub"))
    if not keys:
        print(f"register-supernodes: no *.pub in {args.keys}", file=sys.stderr)
        return 1
    try:
        for key in keys:
            print(f"register-supernodes: {key.stem}: {register(key)}", flush=True)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"register-supernodes: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
