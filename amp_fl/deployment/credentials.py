"""TLS certificates and SuperNode authentication keys for a Flower federation (flwr 1.41).

One call of :func:`generate_credentials` writes everything a TLS + authenticated federation needs
into one folder (the file names are the attributes of :class:`Credentials`):

``ca.crt`` / ``ca.key``
    a private certificate authority. ``ca.crt`` is what every client verifies servers with
    (``flower-supernode --root-certificates``, ``flower-superexec --root-certificates``,
    ``root-certificates`` of a ``flwr`` connection); ``ca.key`` stays with whoever issues
    certificates.
``superlink.crt`` / ``superlink.key``
    the SuperLink's server certificate (``flower-superlink --ssl-certfile/--ssl-keyfile``; with
    ``--ssl-ca-certfile ca.crt``), valid for ``localhost``, ``127.0.0.1``, ``::1``, the compose
    service name ``superlink`` and any ``--superlink-host`` given (the server's name or address
    that boards dial).
``supernode-<k>.crt`` / ``supernode-<k>.key``
    SuperNode ``k``'s Runtime API certificate (``flower-supernode --ssl-certfile/--ssl-keyfile``),
    which its ClientApp SuperExec verifies; valid for ``supernode-<k>``, ``localhost`` and the
    loopback addresses.
``supernode-<k>-auth`` / ``supernode-<k>-auth.pub``
    SuperNode ``k``'s authentication key pair: an EC P-384 key in OpenSSH format, as Flower
    reads it. The private key goes to ``flower-supernode --auth-supernode-private-key``; the
    public key is registered with ``flwr supernode register supernode-<k>-auth.pub <connection>``
    on a SuperLink started with ``--enable-supernode-auth``.
``superexec.secret``
    a shared secret (``--superexec-auth-secret-file``) that SuperLink, SuperNodes and their
    SuperExecs use to authenticate the Runtime API connections.

Uses the ``cryptography`` package (a dependency of flwr itself), so it runs wherever the
project is installed; ``docker/generate_certs.sh`` is its command-line front end. Existing files
are kept unless ``overwrite`` is set, so re-running never invalidates registered keys.
These are credentials for tests and prototypes; production PKI follows the site's own rules.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
SUPERLINK_SERVICE = "superlink"  # the compose service name SuperNodes and the ServerApp SuperExec dial
DEFAULT_DAYS = 365


@dataclass(frozen=True)
class Credentials:
    """Paths of the files :func:`generate_credentials` wrote (see the module docstring)."""

    folder: Path
    num_supernodes: int

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca.key"

    @property
    def superlink_cert(self) -> Path:
        return self.folder / "superlink.crt"

    @property
    def superlink_key(self) -> Path:
        return self.folder / "superlink.key"

    @property
    def superexec_secret(self) -> Path:
        return self.folder / "superexec.secret"

    def supernode_cert(self, k: int) -> Path:
        return self.folder / f"supernode-{self._check(k)}.crt"

    def supernode_key(self, k: int) -> Path:
        return self.folder / f"supernode-{self._check(k)}.key"

    def auth_private_key(self, k: int) -> Path:
        return self.folder / f"supernode-{self._check(k)}-auth"

    def auth_public_key(self, k: int) -> Path:
        return self.folder / f"supernode-{self._check(k)}-auth.pub"

    def _check(self, k: int) -> int:
        if not 0 <= k < self.num_supernodes:
            raise ValueError(f"k: SuperNode index must be in [0, {self.num_supernodes}), got {k}")
        return k


def _write(path: Path, data: bytes, private: bool) -> None:
    path.write_bytes(data)
    # Private keys readable by their owner only; certificates and public keys by everyone
    # (the Flower images run as a non-root user that must read the mounted files).
    path.chmod(0o600 if private else 0o644)


def _private_key(path: Path, overwrite: bool, curve: ec.EllipticCurve) -> ec.EllipticCurvePrivateKey:
    if path.exists() and not overwrite:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path}: expected an EC private key, found {type(key).__name__}; delete it or overwrite")
        return key
    key = ec.generate_private_key(curve)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write(path, pem, private=True)
    return key


def _subject_alt_names(names: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):  # unique, in order
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "amp-fl"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )


def _ca(folder: Path, days: int, overwrite: bool) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _private_key(folder / "ca.key", overwrite, ec.SECP256R1())
    cert_path = folder / "ca.crt"
    if cert_path.exists() and not overwrite:
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), key
    now = datetime.datetime.now(datetime.UTC)
    name = _name("amp-fl federation CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return cert, key


def _server_cert(
    cert_path: Path,
    key_path: Path,
    names: Sequence[str],
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    days: int,
    overwrite: bool,
) -> None:
    key = _private_key(key_path, overwrite, ec.SECP256R1())
    if cert_path.exists() and not overwrite:
        return
    ca_cert, ca_key = ca
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_subject_alt_names(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False)


def _auth_key_pair(private_path: Path, public_path: Path, overwrite: bool) -> None:
    """An EC P-384 key pair in OpenSSH format (what ``flower-supernode`` and ``flwr supernode register`` read)."""
    if private_path.exists() and public_path.exists() and not overwrite:
        return
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _write(private_path, private, private=True)
    _write(public_path, public + f" {private_path.name}\n".encode(), private=False)


def generate_credentials(
    folder: str | os.PathLike[str],
    num_supernodes: int,
    *,
    superlink_hosts: Sequence[str] = (),
    days: int = DEFAULT_DAYS,
    overwrite: bool = False,
) -> Credentials:
    """Write a CA, the SuperLink's and ``num_supernodes`` SuperNodes' certificates and auth keys, and a secret.

    Parameters
    ----------
    folder : path
        Created if needed. Files already there are kept (and reused to sign) unless ``overwrite``.
    num_supernodes : int
        SuperNodes 0 .. num_supernodes - 1 get a Runtime API certificate and an auth key pair.
    superlink_hosts : sequence of str
        Extra DNS names or IP addresses the SuperLink certificate must be valid for: the name or
        address boards use to reach the server (``--superlink <host>:<port>``).
    days : int
        Validity of every certificate.
    overwrite : bool
        Replace existing files (registered public keys then have to be registered again).
    """
    if num_supernodes < 1:
        raise ValueError(f"num_supernodes: must be >= 1, got {num_supernodes}")
    if days < 1:
        raise ValueError(f"days: must be >= 1, got {days}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    creds = Credentials(out, num_supernodes)
    ca = _ca(out, days, overwrite)
    _server_cert(
        creds.superlink_cert,
        creds.superlink_key,
        [SUPERLINK_SERVICE, *LOOPBACK_NAMES, *superlink_hosts],
        ca,
        days,
        overwrite,
    )
    for k in range(num_supernodes):
        _server_cert(
            creds.supernode_cert(k), creds.supernode_key(k), [f"supernode-{k}", *LOOPBACK_NAMES], ca, days, overwrite
        )
        _auth_key_pair(creds.auth_private_key(k), creds.auth_public_key(k), overwrite)
    if overwrite or not creds.superexec_secret.exists():
        _write(creds.superexec_secret, secrets.token_hex(32).encode(), private=True)
    return creds


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m amp_fl.deployment.credentials OUT --supernodes N [--superlink-host HOST ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m amp_fl.deployment.credentials",
        description="Write TLS certificates and SuperNode authentication keys for a Flower federation.",
    )
    parser.add_argument("folder", type=Path, help="output folder (existing files are kept unless --overwrite)")
    parser.add_argument("--supernodes", type=int, default=3, help="number of SuperNodes (default 3)")
    parser.add_argument(
        "--superlink-host",
        action="append",
        default=[],
        metavar="HOST",
        help="extra DNS name or IP the SuperLink certificate is valid for (repeatable)",
    )
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help=f"certificate validity (default {DEFAULT_DAYS})")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    try:
        creds = generate_credentials(
            args.folder, args.supernodes, superlink_hosts=args.superlink_host, days=args.days, overwrite=args.overwrite
        )
    except ValueError as exc:
        parser.error(str(exc))
    print(f"credentials for a SuperLink and {creds.num_supernodes} SuperNodes in {creds.folder}")


if __name__ == "__main__":
    main()
