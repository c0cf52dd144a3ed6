"""TLS certificates and SuperNode authentication keys for a pilot.

- a certificate authority (``ca.crt``, ``ca.key``: keep the key offline);
- the SuperLink's server certificate (``superlink.crt``, ``superlink.key``),
  valid for the host names / IP addresses the sites connect to;
- per site, an ECDSA P-384 key pair in OpenSSH format (``<site>.key``,
  ``<site>.pub``): Flower's SuperNode authentication reads exactly this format.
  The private key stays at the site; the SuperLink operator registers the
  public key with ``flwr supernode register``.

Uses ``cryptography`` (installed with Flower), so no ``openssl`` binary is needed.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Credentials:
    """Paths of everything :func:`make_credentials` wrote."""

    ca_cert: Path
    superlink_cert: Path
    superlink_key: Path
    site_keys: dict[str, tuple[Path, Path]]  # site -> (private key, public key)


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _subject_alternative_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def make_credentials(out_dir: str | Path, sites: Sequence[str], hosts: Sequence[str] = ("127.0.0.1", "localhost"),
                     days: int = 365) -> Credentials:
    """Write a CA, the SuperLink certificate for ``hosts`` and one key pair per site.

    Refuses to overwrite an existing CA (a new CA would lock out every site that
    trusts the old one) and rejects site names that are not plain file names.
    """
    out = Path(out_dir)
    if not sites:
        raise ValueError("sites: name at least one site")
    for site in sites:
        if not _SITE_NAME.fullmatch(site):
            raise ValueError(f"site name {site!r}: use letters, digits, '.', '_' or '-' (max 64)")
    if len(set(sites)) != len(sites):
        raise ValueError(f"sites: duplicate names in {list(sites)}")
    if not hosts:
        raise ValueError("hosts: name at least one host name or IP address of the SuperLink")
    if (out / "ca.crt").exists():
        raise FileExistsError(f"{out / 'ca.crt'} exists: refusing to replace the pilot's CA")
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = {"not_valid_before": now - datetime.timedelta(minutes=5), "not_valid_after": now + datetime.timedelta(days=days)}

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pgsl-flower pilot CA")])
    ca = (
        x509.CertificateBuilder(subject_name=ca_name, issuer_name=ca_name, public_key=ca_key.public_key(),
                                serial_number=x509.random_serial_number(), **valid)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server = (
        x509.CertificateBuilder(subject_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]),
                                issuer_name=ca_name, public_key=server_key.public_key(),
                                serial_number=x509.random_serial_number(), **valid)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_subject_alternative_names(hosts)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    _write_private(out / "ca.key", _pem_key(ca_key))
    (out / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_private(out / "superlink.key", _pem_key(server_key))
    (out / "superlink.crt").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    return Credentials(out / "ca.crt", out / "superlink.crt", out / "superlink.key",
                       {site: make_site_key(out, site) for site in sites})


def make_site_key(out_dir: str | Path, site: str) -> tuple[Path, Path]:
    """One site's SuperNode key pair (ECDSA P-384, OpenSSH format): (private, public)."""
    out = Path(out_dir)
    private, public = out / f"{site}.key", out / f"{site}.pub"
    if private.exists():
        raise FileExistsError(f"{private} exists: refusing to replace a site's key")
    key = ec.generate_private_key(ec.SECP384R1())
    _write_private(private, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                              serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH) + f" {site}\n".encode())
    return private, public
