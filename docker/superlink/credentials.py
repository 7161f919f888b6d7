#!/usr/bin/env python3
"""Create a federation's credentials once: the one-shot `credentials` service of docker/compose.yaml.

Writes, under ROOT, one folder per compose volume (each mounted only where it is needed)::

    ca-key/ca.key                      the CA's private key (only this service ever mounts it)
    ca/ca.crt                          the CA: SuperNodes, SuperExec and the flwr CLI trust it
    ca/supernodes/<name>.pub           SuperNode public keys, for `flwr supernode register`
    tls/tls.crt, tls/tls.key           the SuperLink's server certificate, SAN = --san names
    superexec-auth-serverapp/serverapp shared secret SuperLink <-> server-side SuperExec
    superexec-auth-clientapp/clientapp shared secret SuperNode <-> its SuperExec
    keys-<name>/<name>                 each SuperNode's private key (OpenSSH ECDSA P-384)
    grafana/admin-password             Grafana's admin password (random; owned by --grafana-owner)

Idempotent: what exists is kept (registered SuperNode keys must survive a restart); a new CA
re-issues the SuperLink certificate. Needs only `cryptography` (a Flower dependency).

    fedssl-credentials /init --san superlink --san localhost --san 127.0.0.1 \
        --supernode supernode-1 --supernode supernode-2 --owner 49999:49999 --grafana-owner 472:0
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PRIVATE, PUBLIC = 0o400, 0o444


def write(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None) -> None:
    """Write atomically with ``mode`` (and ``owner`` when running as root)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    if owner is not None:
        os.chown(tmp, *owner)
        os.chown(path.parent, *owner)
    tmp.replace(path)


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def new_ca(days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedssl federation CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def new_server_cert(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, sans: list[str],
                    days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A server certificate whose SAN lists every name and IP address clients dial."""
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = []
    for san in sans:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            alt_names.append(x509.DNSName(san))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sans[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def supernode_key(name: str) -> tuple[bytes, bytes]:
    """(private, public) OpenSSH ECDSA P-384 key pair: what `flower-supernode` and `flwr supernode register` read."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public + f" {name}\n".encode()


def create(root: Path, sans: list[str], supernodes: list[str], owner: tuple[int, int] | None,
           days: int = 825, grafana_owner: tuple[int, int] | None = None) -> list[str]:
    """Create what is missing under ``root``; returns the paths written."""
    written: list[str] = []

    def put(rel: str, data: bytes, mode: int, file_owner: tuple[int, int] | None = owner) -> None:
        write(root / rel, data, mode, file_owner)
        written.append(rel)

    # 1. The CA (kept if present) and the SuperLink certificate (re-issued with a new CA).
    ca_key_path, ca_path = root / "ca-key/ca.key", root / "ca/ca.crt"
    if ca_key_path.is_file() and ca_path.is_file():
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
        new_authority = False
    else:
        ca_key, ca_cert = new_ca(days)
        put("ca-key/ca.key", pem_key(ca_key), PRIVATE)
        put("ca/ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM), PUBLIC)
        new_authority = True
    if new_authority or not (root / "tls/tls.crt").is_file() or not (root / "tls/tls.key").is_file():
        tls_key, tls_cert = new_server_cert(ca_key, ca_cert, sans, days)
        put("tls/tls.key", pem_key(tls_key), PRIVATE)
        put("tls/tls.crt", tls_cert.public_bytes(serialization.Encoding.PEM), PUBLIC)

    # 2. SuperExec shared secrets (raw bytes: 64 hex characters, no newline).
    for side in ("serverapp", "clientapp"):
        if not (root / f"superexec-auth-{side}/{side}").is_file():
            put(f"superexec-auth-{side}/{side}", secrets.token_hex(32).encode(), PRIVATE)

    # 3. One key pair per SuperNode: private half for the node only, public half for registration.
    for name in supernodes:
        if not (root / f"keys-{name}/{name}").is_file():
            private, public = supernode_key(name)
            put(f"keys-{name}/{name}", private, PRIVATE)
            put(f"ca/supernodes/{name}.pub", public, PUBLIC)

    # 4. Grafana's admin password: never a default, never in the repository.
    if not (root / "grafana/admin-password").is_file():
        put("grafana/admin-password", secrets.token_urlsafe(24).encode(), PRIVATE, grafana_owner or owner)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--san", action="append", required=True, help="DNS name or IP of the SuperLink (repeat)")
    parser.add_argument("--supernode", action="append", default=[], help="SuperNode name (repeat)")
    parser.add_argument("--owner", help="UID:GID that owns the files (when run as root)")
    parser.add_argument("--grafana-owner", help="UID:GID of Grafana's user (default: --owner)")
    parser.add_argument("--days", type=int, default=825)
    args = parser.parse_args()
    owner = tuple(int(x) for x in args.owner.split(":")) if args.owner else None
    grafana_owner = tuple(int(x) for x in args.grafana_owner.split(":")) if args.grafana_owner else None
    written = create(args.root, args.san, args.supernode, owner, args.days, grafana_owner)  # type: ignore[arg-type]
    print("credentials: " + (f"created {', '.join(written)}" if written else "all present, nothing to do"))


if __name__ == "__main__":
    main()
