"""Shared fixtures: the Lambda emulator, gateways, and test certificates."""

import datetime
import ipaddress
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from emulator import start_emulator  # noqa: E402
from gateway import base_config, start_gateway  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TEST_FUNCTIONS = os.path.join(HERE, "functions")


@pytest.fixture(scope="session")
def emulator():
    """One emulator for the session with the example functions and the test-only
    ones; each test starts from empty records and the default mode."""
    emu = start_emulator(functions=[os.path.join(os.path.dirname(os.path.dirname(HERE)),
                                                 "examples", "functions"), TEST_FUNCTIONS])
    yield emu
    emu.stop()


@pytest.fixture
def emu(emulator):
    emulator.reset()
    yield emulator
    emulator.reset()


@pytest.fixture
def gateways():
    """Start gateways with gateways.start(config); all are stopped (SIGTERM) at
    teardown, which fails the test on a non-zero exit or a sanitizer report."""

    class Factory:
        def __init__(self):
            self.started = []

        def start(self, config, **kw):
            gw = start_gateway(config, **kw)
            self.started.append(gw)
            return gw

    f = Factory()
    yield f
    errors = []
    for gw in f.started:
        try:
            gw.stop()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n\n".join(errors))


@pytest.fixture
def gateway(emu, gateways):
    """A gateway with a standard route table in front of the emulator."""
    return gateways.start(base_config(emu, STANDARD_ROUTES))


STANDARD_ROUTES = [
    {"method": "GET", "path": "/hello", "function": "hello"},
    {"method": "ANY", "path": "/echo/{proxy+}", "function": "echo"},
    {"method": "ANY", "path": "/echo", "function": "echo"},
    {"method": "ANY", "path": "/v1/echo/{proxy+}", "function": "echo", "payload_format": "1.0"},
    {"method": "GET", "path": "/users/{id}", "function": "users"},
    {"method": "POST", "path": "/users", "function": "users"},
    {"method": "POST", "path": "/binary", "function": "binary"},
    {"method": "GET", "path": "/binary", "function": "binary"},
    {"method": "GET", "path": "/big", "function": "big"},
    {"method": "GET", "path": "/fail", "function": "fail"},
    {"method": "GET", "path": "/malformed", "function": "malformed"},
    {"method": "GET", "path": "/v1/malformed", "function": "malformed", "payload_format": "1.0"},
    {"method": "GET", "path": "/slow", "function": "slow", "timeout_ms": 1000},
    {"method": "GET", "path": "/cookies", "function": "cookies"},
    {"method": "GET", "path": "/v1/cookies", "function": "cookies", "payload_format": "1.0"},
    {"method": "POST", "path": "/events", "function": "async_sink", "invocation": "async"},
    {"method": "ANY", "path": "/headers", "function": "headers"},
    {"method": "ANY", "path": "/v1/headers", "function": "headers", "payload_format": "1.0"},
]


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """A test CA, a server certificate for localhost/127.0.0.1/::1 signed by it,
    and an unrelated second CA. Made here with python3-cryptography."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d = tmp_path_factory.mktemp("certs")
    now = datetime.datetime.utcnow()

    def write_key(key, name):
        path = d / name
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        return str(path)

    def write_cert(cert, name):
        path = d / name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return str(path)

    def make_ca(cn):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                             crl_sign=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        return key, cert

    ca_key, ca_cert = make_ca("lambdagate test CA")
    other_key, other_cert = make_ca("some other CA")
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_cert.subject).public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return {
        "ca": write_cert(ca_cert, "ca.pem"),
        "other_ca": write_cert(other_cert, "other-ca.pem"),
        "cert": write_cert(leaf, "server.pem"),
        "key": write_key(leaf_key, "server.key"),
        "dir": str(d),
    }


@pytest.fixture
def redis_server():
    """A real /usr/bin/redis-server on a free port (redis_server.RedisServer:
    .port, .client(), .kill(), .restart() on the same port); ended at teardown."""
    from redis_server import RedisServer
    srv = RedisServer()
    yield srv
    srv.close()


@pytest.fixture
def blackhole():
    """A TCP listener that accepts connections and never answers
    (redis_server.Blackhole: .port, .accepted)."""
    from redis_server import Blackhole
    hole = Blackhole()
    yield hole
    hole.stop()
