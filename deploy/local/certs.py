"""Throw-away TLS material for a local broker and its clients (tests, local runs): a CA, a server certificate for
127.0.0.1/localhost and a client certificate, generated with Python's ``cryptography`` (no keytool, no openssl
command line). Keys are unencrypted PKCS#8 PEM files with mode 0600 — fine for a test directory, never for
production (use your organization's CA there).

    pki = make_pki(directory)   # → Pki(ca, server_key, server_chain, client_cert, client_key) file paths
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Pki", "make_pki"]


@dataclass(frozen=True)
class Pki:
    ca: Path  # CA certificate (PEM): clients trust it; the broker trusts client certificates it signed
    server_key: Path  # broker private key (PKCS#8 PEM, unencrypted)
    server_chain: Path  # broker certificate followed by the CA certificate (PEM)
    client_cert: Path  # client certificate (PEM), CN=npsflow-client
    client_key: Path  # client private key (PKCS#8 PEM, unencrypted)


def _write(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def make_pki(directory: Path | str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), days: int = 7) -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=days)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def pem_key(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (x509.CertificateBuilder().subject_name(name("npsflow test CA")).issuer_name(name("npsflow test CA"))
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(until)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))

    def leaf(cn: str, usage, sans: list) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca_cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now).not_valid_after(until)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), pem_key(key)

    sans = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    server_cert, server_key = leaf("npsflow-broker", ExtendedKeyUsageOID.SERVER_AUTH, sans)
    client_cert, client_key = leaf("npsflow-client", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return Pki(
        ca=_write(directory / "ca.pem", ca_pem),
        server_key=_write(directory / "server.key", server_key),
        server_chain=_write(directory / "server-chain.pem", server_cert + ca_pem),
        client_cert=_write(directory / "client.pem", client_cert),
        client_key=_write(directory / "client.key", client_key),
    )
