#!/usr/bin/env python3
"""Container health check: exit 0 when the endpoint answers healthy, 1 otherwise.

    fedssl-healthcheck https://localhost:8000/health --cafile /etc/fedssl/ca/ca.crt   # SuperLink
    fedssl-healthcheck http://127.0.0.1:9094/health                                 # SuperNode
    fedssl-healthcheck grpc://127.0.0.1:8081                                        # SuperExec
"""

from __future__ import annotations

import argparse
import ssl
import sys
import urllib.request


def http_ok(url: str, cafile: str | None, timeout: float) -> bool:
    context = ssl.create_default_context(cafile=cafile) if url.startswith("https:") else None
    with urllib.request.urlopen(url, context=context, timeout=timeout) as response:  # noqa: S310
        return response.status == 200


def grpc_ok(address: str, timeout: float) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="http(s)://host:port/path or grpc://host:port")
    parser.add_argument("--cafile", help="CA certificate that signed the server's (https)")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    try:
        if args.url.startswith("grpc://"):
            healthy = grpc_ok(args.url.removeprefix("grpc://"), args.timeout)
        else:
            healthy = http_ok(args.url, args.cafile, args.timeout)
    except Exception as exc:  # any failure is "unhealthy"; say why in `docker inspect`
        print(f"unhealthy: {args.url}: {exc}", file=sys.stderr)
        return 1
    print(f"{'healthy' if healthy else 'unhealthy'}: {args.url}")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
