"""Workers and hot reload through the real daemon (issue 6 items 1 and 2;
CONTRACT sections 2, 3 and 7).

workers 2: both workers serve (the access log's "worker" field shows two
distinct ids); SIGHUP adds a route while a slow request is in flight, and
that request still completes with 200; SIGHUP swaps the TLS certificate of
a listener (a new connection sees the new serial number, a keep-alive
connection opened before keeps working).

/metrics stays exact across a reload (counters not reset, a route added by
the reload counted under its own label, a label value holding a double
quote and a backslash escaped), parsed with test_admin.py's text-format parser.

Covered elsewhere, so not repeated here: SIGHUP with a bad config
(test_http.py test_sighup_with_a_bad_config_keeps_serving), SIGUSR1 after
moving the access log (test_http.py test_sigusr1_reopens_the_access_log),
/metrics parsed and counters exact (test_admin.py), sd_notify
(test_service.py).

Run: LG_BINARY=.../src/lambdagate /usr/bin/python3 -m pytest -q tests/integration/test_reload.py
"""

import datetime
import http.client
import ipaddress
import json
import os
import signal
import socket
import ssl
import threading
import time

import pytest

from gateway import base_config, free_port

HELLO = {"method": "GET", "path": "/hello", "function": "hello"}
SLOW = {"method": "GET", "path": "/slow", "function": "slow", "timeout_ms": 5000}
HELLO_BODY = {"message": "hello", "path": "/hello", "method": "GET"}


def rewrite_config(gw, change):
    """Load gw's config file, let change(cfg) edit it, write it back."""
    with open(gw.config_path) as f:
        cfg = json.load(f)
    change(cfg)
    tmp = gw.config_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(cfg, f, indent=2)
    os.replace(tmp, gw.config_path)


def reloads_done(gw):
    return gw.log_text().count("INFO configuration reloaded")


def wait_reloaded(gw, before, timeout=5):
    """Wait for one more "configuration reloaded" line than before."""
    deadline = time.monotonic() + timeout
    while reloads_done(gw) <= before:
        assert gw.proc.poll() is None, "lambdagate exited:\n" + gw.log_text()[-4000:]
        assert time.monotonic() < deadline, \
            "no 'configuration reloaded' after SIGHUP:\n" + gw.log_text()[-4000:]
        time.sleep(0.02)


def wait_access(gw, pred, timeout=5):
    """The access log's lines once one of them satisfies pred."""
    deadline = time.monotonic() + timeout
    while True:
        lines = gw.access_log()
        if any(pred(x) for x in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


# ---------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------

def test_two_workers_both_serve(emu, gateways):
    gw = gateways.start(base_config(emu, [HELLO], workers=2))
    r = gw.request("GET", "/hello")
    assert r.status == 200 and r.json() == HELLO_BODY, r
    rid = r.header("x-request-id")
    lines = wait_access(gw, lambda x: x["request_id"] == rid)
    line = [x for x in lines if x["request_id"] == rid]
    assert len(line) == 1, lines
    assert "worker" in line[0], line[0]
    assert type(line[0]["worker"]) is int and line[0]["worker"] in (0, 1), line[0]

    # A new connection each time: the kernel (SO_REUSEPORT) or the shared
    # accept spreads them; both workers must answer some.
    sent = 1
    seen = {line[0]["worker"]}
    deadline = time.monotonic() + 15
    while len(seen) < 2 and sent < 300 and time.monotonic() < deadline:
        for _ in range(10):
            assert gw.request("GET", "/hello").status == 200
            sent += 1
        seen = {x["worker"] for x in gw.access_log()}
    # every answered request is logged exactly once, by one of the two
    lines = gw.access_log()
    deadline = time.monotonic() + 5
    while len(lines) < sent and time.monotonic() < deadline:
        time.sleep(0.02)
        lines = gw.access_log()
    assert len(lines) == sent, (len(lines), sent)
    ids = {x["worker"] for x in lines}
    assert ids == {0, 1}, f"worker ids seen over {sent} connections: {sorted(ids)}"
    assert all(x["status"] == 200 and x["route"] == "GET /hello" for x in lines)
    assert len({x["request_id"] for x in lines}) == sent


# ---------------------------------------------------------------------------
# SIGHUP: routes
# ---------------------------------------------------------------------------

def test_sighup_adds_a_route_while_a_slow_request_completes(emu, gateways):
    gw = gateways.start(base_config(emu, [HELLO, SLOW], workers=2))
    assert gw.request("GET", "/added").status == 404

    result = {}

    def slow():
        try:
            result["r"] = gw.request("GET", "/slow?ms=1500", timeout=10)
        except Exception as e:  # noqa: BLE001 - reported by the test
            result["error"] = repr(e)

    t = threading.Thread(target=slow)
    t.start()
    try:
        emu.wait_for_record(lambda x: x["function"] == "slow")
        before = reloads_done(gw)
        rewrite_config(gw, lambda cfg: cfg["routes"].append(
            {"method": "GET", "path": "/added", "function": "hello"}))
        gw.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 3
        while True:
            r = gw.request("GET", "/added")
            if r.status == 200:
                break
            assert r.status == 404, r
            assert time.monotonic() < deadline, "/added not served after SIGHUP:\n" \
                + gw.log_text()[-3000:]
            time.sleep(0.05)
        assert r.json() == {"message": "hello", "path": "/added", "method": "GET"}
        # the slow request was in flight across the reload
        assert t.is_alive(), "the slow request finished before the reload took effect"
        wait_reloaded(gw, before)
        # every worker serves the new table now (a new connection each)
        for _ in range(8):
            assert gw.request("GET", "/added").status == 200
        assert gw.request("GET", "/hello").status == 200
    finally:
        t.join(10)
    assert not t.is_alive()
    assert "error" not in result, result
    r = result["r"]
    assert r.status == 200, r
    assert r.json() == {"slept_ms": 1500}
    rid = r.header("x-request-id")
    lines = wait_access(gw, lambda x: x["request_id"] == rid)
    slow_line = [x for x in lines if x["request_id"] == rid]
    assert len(slow_line) == 1, lines
    assert (slow_line[0]["route"], slow_line[0]["status"]) == ("GET /slow", 200)
    assert "ERROR" not in gw.log_text()


# ---------------------------------------------------------------------------
# SIGHUP: TLS certificate
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_certs(tmp_path_factory):
    """A test CA and two leaf certificates for localhost/127.0.0.1 signed by
    it, with distinct serial numbers (and keys)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d = tmp_path_factory.mktemp("reload-certs")
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lambdagate reload test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    out = {"ca": str(d / "ca.pem")}
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for name, serial in (("a", 0x1A1A1A), ("b", 0x2B2B2B)):
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
                .issuer_name(ca.subject).public_key(key.public_key())
                .serial_number(serial)
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.SubjectAlternativeName([
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                .add_extension(x509.ExtendedKeyUsage(
                    [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        (d / f"{name}.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        (d / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
        out[name] = {"certificate": str(d / f"{name}.pem"), "private_key": str(d / f"{name}.key"),
                     "serial": serial}
    return out


def peer_serial(sock):
    from cryptography import x509
    der = sock.getpeercert(binary_form=True)
    assert der, "no peer certificate"
    return x509.load_der_x509_certificate(der).serial_number


def serial_of_new_connection(port, ctx):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return peer_serial(s)


def test_sighup_swaps_the_tls_certificate(emu, gateways, two_certs):
    a, b = two_certs["a"], two_certs["b"]
    cfg = base_config(emu, [HELLO])
    port = free_port()
    cfg["listen"] = [{"address": f"127.0.0.1:{port}",
                      "tls": {"certificate": a["certificate"], "private_key": a["private_key"]}}]
    gw = gateways.start(cfg)
    ctx = ssl.create_default_context(cafile=two_certs["ca"])
    assert serial_of_new_connection(port, ctx) == a["serial"]

    # a keep-alive connection opened (and used) before the reload
    keep = http.client.HTTPSConnection("localhost", port, timeout=10, context=ctx)
    try:
        keep.request("GET", "/hello")
        resp = keep.getresponse()
        assert resp.status == 200 and json.loads(resp.read()) == HELLO_BODY
        assert peer_serial(keep.sock) == a["serial"]
        keep_sock = keep.sock

        before = reloads_done(gw)

        def to_b(c):
            c["listen"][0]["tls"] = {"certificate": b["certificate"],
                                     "private_key": b["private_key"]}
        rewrite_config(gw, to_b)
        gw.send_signal(signal.SIGHUP)
        wait_reloaded(gw, before)

        # new connections get certificate B, verified against the same CA
        assert serial_of_new_connection(port, ctx) == b["serial"]
        resp = gw.request("GET", "/hello", tls_context=ctx)
        assert resp.status == 200 and resp.json() == HELLO_BODY, resp

        # the old connection is the same one, still on A, still served
        for _ in range(2):
            keep.request("GET", "/hello")
            resp = keep.getresponse()
            assert resp.status == 200 and json.loads(resp.read()) == HELLO_BODY
        assert keep.sock is keep_sock, "the keep-alive connection was reopened"
        assert peer_serial(keep.sock) == a["serial"]
    finally:
        keep.close()
    assert "ERROR" not in gw.log_text(), gw.log_text()


# ---------------------------------------------------------------------------
# SIGHUP and /metrics
# ---------------------------------------------------------------------------

def test_metrics_count_exactly_across_a_reload(emu, gateways):
    """Counters are not reset by a reload and a route added by it gets its
    own series; a route key holding a double quote and a backslash comes out
    escaped in the label (parsed back by test_admin.py's text-format parser)."""
    from test_admin import Metrics, admin, admin_config, start, wait_metric

    odd = {"method": "GET", "path": '/q"x\\y', "function": "hello"}
    gw = start(gateways, admin_config(emu, [HELLO, odd], workers=2))
    for _ in range(3):
        assert gw.request("GET", "/hello").status == 200
    for path in ('/q%22x%5Cy', '/q"x\\y'):
        r = gw.request("GET", path)
        assert r.status == 200, (path, r)
    m = wait_metric(gw, "lambdagate_request_duration_seconds_count", 5)
    assert m.get("lambdagate_requests_total", route="GET /hello", status="200") == 3
    assert m.get("lambdagate_requests_total", route='GET /q"x\\y', status="200") == 2
    assert 'route="GET /q\\"x\\\\y"' in m.text, m.text
    assert m.total("lambdagate_requests_total") == 5

    before = reloads_done(gw)
    rewrite_config(gw, lambda cfg: cfg["routes"].append(
        {"method": "GET", "path": "/added", "function": "hello"}))
    gw.send_signal(signal.SIGHUP)
    wait_reloaded(gw, before)
    for path in ("/added", "/added", "/hello"):
        assert gw.request("GET", path).status == 200, path
    m = wait_metric(gw, "lambdagate_request_duration_seconds_count", 8)
    assert m.get("lambdagate_request_duration_seconds_count") == 8
    assert m.get("lambdagate_requests_total", route="GET /hello", status="200") == 4
    assert m.get("lambdagate_requests_total", route='GET /q"x\\y', status="200") == 2
    assert m.get("lambdagate_requests_total", route="GET /added", status="200") == 2
    assert m.total("lambdagate_requests_total") == 8
    assert m.get("lambdagate_lambda_invocations_total", function="hello", outcome="ok") == 8
    # and it stays exact: scrapes are not requests
    time.sleep(0.2)
    m = Metrics(admin(gw, "/metrics").body.decode("utf-8"))
    assert m.total("lambdagate_requests_total") == 8
