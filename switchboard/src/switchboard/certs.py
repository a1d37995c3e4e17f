"""A self-signed certificate for local HTTPS, so that a phone on the same network gets the
camera and motion APIs, which browsers give only to secure contexts.

Made on first run for localhost and the machine's addresses, and made again when it is about to
expire or an address it does not cover appears. Never committed (.gitignore).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import socket
from pathlib import Path

import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
VALID_DAYS = 365
RENEW_BEFORE = dt.timedelta(days=14)


def lan_addresses() -> list[IPAddress]:
    """The machine's own non-loopback addresses (no traffic is sent to find them)."""
    found: list[IPAddress] = []
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            ip = ipaddress.ip_address(address.address.split("%")[0])
            if not (ip.is_loopback or ip.is_link_local or ip.is_multicast) and ip not in found:
                found.append(ip)
    return found


def wanted_names() -> tuple[list[str], list[IPAddress]]:
    dns = ["localhost"]
    hostname = socket.gethostname()
    if hostname and hostname != "localhost":
        dns.append(hostname)
    ips: list[IPAddress] = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    ips += lan_addresses()
    return dns, ips


def _covers(cert: x509.Certificate, dns: list[str], ips: list[IPAddress]) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have_dns = set(san.get_values_for_type(x509.DNSName))
    have_ips = set(san.get_values_for_type(x509.IPAddress))
    fresh = cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > RENEW_BEFORE
    return fresh and set(dns) <= have_dns and set(ips) <= have_ips


def ensure_certificate(directory: Path) -> tuple[Path, Path]:
    """Return (certificate, key) in ``directory``, making them when missing or outdated."""
    cert_path, key_path = directory / "localhost.crt", directory / "localhost.key"
    dns, ips = wanted_names()
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if _covers(cert, dns, ips):
            return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Switchboard local")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(d) for d in dns] + [x509.IPAddress(ip) for ip in ips]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.info("made a self-signed certificate for %s", ", ".join(dns + [str(i) for i in ips]))
    return cert_path, key_path


if __name__ == "__main__":
    import sys

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ensure_certificate(Path(sys.argv[1] if len(sys.argv) > 1 else ".certs"))


if __name__ == "__main__":
    # `python -m switchboard.certs DIR`: make (or keep) the certificate in DIR and print the
    # paths of the certificate and its key (scripts/cluster.sh uses it).
    import sys

    certificate, key = ensure_certificate(Path(sys.argv[1] if len(sys.argv) > 1 else ".certs"))
    sys.stdout.write(f"{certificate} {key}\n")
