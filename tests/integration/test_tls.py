"""Integration tests of lambdagate's TLS and IPv6 listeners: the real daemon over
real TCP/TLS (CONTRACT sections 3 and 8: TLS 1.2 and 1.3 only, HTTP/1.1 by ALPN,
header_timeout_ms bounds the handshake too).

Run: LG_BINARY=.../src/lambdagate /usr/bin/python3 -m pytest -q tests/integration/test_tls.py
"""

import http.client
import json
import re
import socket
import ssl
import threading
import time
import warnings

import pytest

from gateway import base_config, free_port

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

ROUTES = [
    {"method": "GET", "path": "/hello", "function": "hello"},
    {"method": "ANY", "path": "/echo/{proxy+}", "function": "echo"},
]


def tls_config(emu, certs, limits=None, extra_listen=()):
    """One TLS listener on 127.0.0.1 (plus extra_listen entries), no throttling."""
    cfg = base_config(emu, ROUTES, limits=dict({"per_ip": None}, **(limits or {})),
                      throttle={"default": None})
    cfg["listen"] = [{"address": f"127.0.0.1:{free_port()}",
                      "tls": {"certificate": certs["cert"], "private_key": certs["key"]}}]
    cfg["listen"] += list(extra_listen)
    return cfg


@pytest.fixture
def tgw(emu, gateways, certs):
    return gateways.start(tls_config(emu, certs))


def client_ctx(certs, minimum=None, maximum=None, alpn=None, cafile=None):
    ctx = ssl.create_default_context(cafile=cafile or certs["ca"])
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def https_get(gw, ctx, path="/hello", host="localhost", index=0):
    _, port = gw.address(index)
    conn = http.client.HTTPSConnection(host, port, timeout=10, context=ctx)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        return resp, body, conn.sock.version() if conn.sock else None
    finally:
        conn.close()


def test_https_request_verified_against_test_ca(tgw, certs):
    resp, body, _ = https_get(tgw, client_ctx(certs))
    assert resp.status == 200
    assert json.loads(body) == {"message": "hello", "path": "/hello", "method": "GET"}
    assert resp.getheader("content-type") == "application/json"
    assert UUID_RE.match(resp.getheader("x-request-id"))
    # by IP address too (the certificate has 127.0.0.1 as an IP SAN)
    resp, body, _ = https_get(tgw, client_ctx(certs), host="127.0.0.1")
    assert resp.status == 200


def test_event_sees_https_and_keepalive_works_over_tls(tgw, certs, emu):
    _, port = tgw.address()
    conn = http.client.HTTPSConnection("localhost", port, timeout=10, context=client_ctx(certs))
    try:
        socks = set()
        for i in range(3):
            conn.request("GET", f"/echo/t{i}", headers={"X-Forwarded-Proto": "http"})
            resp = conn.getresponse()
            ev = json.loads(resp.read())
            assert resp.status == 200
            assert ev["rawPath"] == f"/echo/t{i}"
            assert ev["requestContext"]["requestId"] == resp.getheader("x-request-id")
            socks.add(id(conn.sock))
        assert len(socks) == 1   # one TLS connection for all three
    finally:
        conn.close()


def test_certificate_from_another_ca_is_rejected_by_client(tgw, certs):
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(tgw, client_ctx(certs, cafile=certs["other_ca"]))


@pytest.mark.parametrize("version,name", [
    (ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
    (ssl.TLSVersion.TLSv1_3, "TLSv1.3"),
])
def test_tls12_and_tls13_accepted(tgw, certs, version, name):
    resp, body, negotiated = https_get(tgw, client_ctx(certs, minimum=version, maximum=version))
    assert resp.status == 200
    assert negotiated == name


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1],
                         ids=["TLSv1.0", "TLSv1.1"])
def test_tls10_and_tls11_refused(tgw, certs, version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(certs["ca"])
    # The client's own security level would refuse these versions before the
    # server is asked; level 0 lets the probe reach the server.
    try:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = version
    except (ssl.SSLError, ValueError) as e:
        pytest.skip(f"this OpenSSL cannot offer {version}: {e}")
    host, port = tgw.address()
    with socket.create_connection((host, port), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                raise AssertionError(f"handshake succeeded with {s.version()}")
    # the listener keeps serving modern clients
    resp, _, _ = https_get(tgw, client_ctx(certs))
    assert resp.status == 200


def test_alpn_h2_and_http11_negotiates_http11(tgw, certs):
    host, port = tgw.address()
    ctx = client_ctx(certs, alpn=["h2", "http/1.1"])
    with socket.create_connection((host, port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.selected_alpn_protocol() == "http/1.1"
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data


def test_alpn_h2_only_is_refused(tgw, certs):
    host, port = tgw.address()
    ctx = client_ctx(certs, alpn=["h2"])
    with socket.create_connection((host, port), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                raise AssertionError(f"negotiated {s.selected_alpn_protocol()!r}")


def test_no_alpn_works(tgw, certs):
    host, port = tgw.address()
    with socket.create_connection((host, port), timeout=10) as raw:
        with client_ctx(certs).wrap_socket(raw, server_hostname="localhost") as s:
            assert s.selected_alpn_protocol() is None
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")


def test_plain_http_on_tls_port_gets_no_answer(tgw, certs, emu):
    host, port = tgw.address()
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
    assert b"HTTP/1.1 200" not in data
    assert emu.invocations() == []
    resp, _, _ = https_get(tgw, client_ctx(certs))
    assert resp.status == 200


def test_ipv6_listener(emu, gateways):
    try:
        port = free_port(socket.AF_INET6, "::1")
    except OSError as e:
        pytest.skip(f"no IPv6 loopback: {e}")
    cfg = base_config(emu, ROUTES, limits={"per_ip": None}, throttle={"default": None})
    cfg["listen"] = [{"address": f"[::1]:{port}"}]
    gw = gateways.start(cfg)
    assert gw.address() == ("::1", port)
    conn = http.client.HTTPConnection("::1", port, timeout=10)
    try:
        conn.request("GET", "/echo/six")
        resp = conn.getresponse()
        ev = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 200
    assert ev["requestContext"]["http"]["sourceIp"] == "::1"
    assert ev["rawPath"] == "/echo/six"
    line = gw.access_log()[-1]
    assert line["remote_addr"] == "::1"
    assert line["request_id"] == resp.getheader("x-request-id")
    # "[::1]:port" is IPv6 only: nothing listens on 127.0.0.1 at that port
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_tls_and_ipv6_tls_listener_together(emu, gateways, certs):
    try:
        port6 = free_port(socket.AF_INET6, "::1")
    except OSError as e:
        pytest.skip(f"no IPv6 loopback: {e}")
    extra = [{"address": f"[::1]:{port6}",
              "tls": {"certificate": certs["cert"], "private_key": certs["key"]}}]
    gw = gateways.start(tls_config(emu, certs, extra_listen=extra))
    for index, host in ((0, "localhost"), (1, "::1")):
        resp, _, _ = https_get(gw, client_ctx(certs), host=host, index=index)
        assert resp.status == 200


def test_stalled_handshake_is_dropped_after_header_timeout(emu, gateways, certs):
    gw = gateways.start(tls_config(emu, certs, limits={"header_timeout_ms": 1000}))
    host, port = gw.address()
    result = {}

    def stall(partial):
        with socket.create_connection((host, port), timeout=10) as s:
            if partial:
                # the first bytes of a TLS record header, then nothing
                s.sendall(b"\x16\x03\x01\x02\x00\x01")
            start = time.monotonic()
            s.settimeout(5)
            data = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except ConnectionResetError:
                pass
            except socket.timeout:
                result[partial] = ("still open", data)
                return
            result[partial] = (time.monotonic() - start, data)

    threads = [threading.Thread(target=stall, args=(p,)) for p in (False, True)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.1)
        # other clients are served meanwhile, before the stalled ones are dropped
        for _ in range(3):
            resp, _, _ = https_get(gw, client_ctx(certs))
            assert resp.status == 200
        assert all(t.is_alive() for t in threads)
    finally:
        for t in threads:
            t.join(10)
    for partial in (False, True):
        elapsed, data = result[partial]
        assert elapsed != "still open", result
        assert 0.8 <= elapsed < 1.0 + 1.5, result
        assert b"HTTP/1.1" not in data, result


def test_tls_client_going_away_mid_request_is_harmless(emu, gateways, certs):
    """Closing during a Lambda call must not disturb the server (the teardown
    checks exit 0 and no sanitizer report)."""
    gw = gateways.start(tls_config(emu, certs))
    host, port = gw.address()
    raw = socket.create_connection((host, port), timeout=10)
    s = client_ctx(certs).wrap_socket(raw, server_hostname="localhost")
    s.sendall(b"GET /echo/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nabc")
    s.close()
    resp, _, _ = https_get(gw, client_ctx(certs))
    assert resp.status == 200
