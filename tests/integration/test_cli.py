"""Integration tests of lambdagate's command line (CONTRACT section 2): -V, -h,
unknown options, -t with good and bad configurations (FILE:LINE: message),
and the daemon failing to bind an address that is in use.

Run: LG_BINARY=.../src/lambdagate /usr/bin/python3 -m pytest -q tests/integration/test_cli.py
"""

import os
import re
import signal
import socket
import subprocess
import time

import pytest

from gateway import REPO, SANITIZER_MARKERS, binary, clean_aws_env, free_port, sanitizer_env


def run(*args, timeout=20, cwd=None):
    p = subprocess.run([binary(), *args], capture_output=True, text=True, timeout=timeout,
                       env=sanitizer_env(clean_aws_env()), cwd=cwd)
    for marker in SANITIZER_MARKERS:
        assert marker not in p.stderr, p.stderr
    return p


def configure_version():
    with open(os.path.join(REPO, "configure.ac")) as f:
        m = re.search(r"AC_INIT\(\[lambdagate\],\s*\[([^\]]+)\]", f.read())
    assert m, "AC_INIT not found in configure.ac"
    return m.group(1)


GOOD = """{
  // a comment
  "listen": [ { "address": "127.0.0.1:%d" } ],
  /* another
     comment */
  "routes": [
    { "method": "GET", "path": "/hello", "function": "hello" }
  ]
}
"""

# Line numbers matter: the unknown key is on line 4, the bad port on line 9.
BAD = """{
  "listen": [ { "address": "127.0.0.1:8080" } ],
  "workers": 1,
  "no_such_key": true,
  "routes": [
    { "method": "GET", "path": "/hello", "function": "hello" }
  ],
  "redis": {
    "port": 70000
  }
}
"""


def daemon_config(port, access_log="off"):
    """GOOD on port, runnable as a daemon (explicit credentials, an endpoint
    that is never called)."""
    return (GOOD % port).replace(
        '"routes"', '"lambda": { "endpoint": "http://127.0.0.1:9", "credentials": '
        '{ "access_key_id": "AKIDX", "secret_access_key": "s" } },\n'
        f'  "access_log": "{access_log}",\n  "routes"')


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_version(tmp_path):
    p = run("-V")
    assert p.returncode == 0
    assert p.stdout == f"lambdagate {configure_version()}\n"
    assert re.match(r"^lambdagate \d+\.\d+\.\d+\n$", p.stdout)
    assert p.stderr == ""


def test_help_on_stdout(tmp_path):
    p = run("-h")
    assert p.returncode == 0
    assert p.stdout.startswith("usage: lambdagate"), p.stdout
    for opt in ("-c FILE", "-t", "-V", "-h"):
        assert opt in p.stdout
    assert p.stderr == ""


@pytest.mark.parametrize("args", [["-x"], ["--bogus"], ["-c"], ["-t", "extra-argument"]])
def test_bad_usage_prints_usage_on_stderr_and_exits_2(args):
    p = run(*args)
    assert p.returncode == 2, p
    assert "usage: lambdagate" in p.stderr
    assert p.stdout == ""


def test_check_good_config(tmp_path):
    path = write(tmp_path, "good.json", GOOD % free_port())
    p = run("-t", "-c", path)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "configuration OK\n"
    assert p.stderr == ""


def test_check_example_config():
    p = run("-t", "-c", os.path.join(REPO, "config", "lambdagate.example.json"))
    assert p.returncode == 0, p.stderr
    assert p.stdout == "configuration OK\n"


def test_check_bad_config_reports_every_error_with_its_line(tmp_path):
    path = write(tmp_path, "bad.json", BAD)
    p = run("-t", "-c", path)
    assert p.returncode == 1
    assert p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 2, p.stderr
    assert lines[0].startswith(f"{path}:4: "), lines
    assert "no_such_key" in lines[0]
    assert lines[1].startswith(f"{path}:9: "), lines
    assert "port" in lines[1] and "70000" in lines[1]


def test_check_errors_in_routes_and_listen(tmp_path):
    text = """{
  "listen": [
    { "address": "127.0.0.1:99999" }
  ],
  "routes": [
    { "method": "GET", "path": "/a", "function": "f" },
    { "method": "GET", "path": "/a/../b", "function": "f" },
    { "method": "GET", "path": "/c", "function": "f",
      "timeout_ms": -5 }
  ]
}
"""
    path = write(tmp_path, "bad2.json", text)
    p = run("-t", "-c", path)
    assert p.returncode == 1
    got = [int(m.group(1)) for m in re.finditer(rf"^{re.escape(path)}:(\d+): \S",
                                               p.stderr, re.M)]
    assert got == [3, 7, 9], p.stderr


def test_check_syntax_error_line(tmp_path):
    text = """{
  "listen": [ { "address": "127.0.0.1:8080" } ],
  "routes": [
    { "method": "GET"
      "path": "/x", "function": "f" }
  ]
}
"""
    path = write(tmp_path, "syntax.json", text)
    p = run("-t", "-c", path)
    assert p.returncode == 1
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert re.match(rf"^{re.escape(path)}:5: .*syntax", lines[0], re.I), lines
    assert p.stdout == ""


def test_check_missing_required_keys(tmp_path):
    path = write(tmp_path, "empty.json", "{\n}\n")
    p = run("-t", "-c", path)
    assert p.returncode == 1
    assert "listen" in p.stderr and "routes" in p.stderr, p.stderr
    for line in p.stderr.splitlines():
        assert line.startswith(path + ":"), line


def test_check_missing_file(tmp_path):
    path = str(tmp_path / "does-not-exist.json")
    p = run("-t", "-c", path)
    assert p.returncode == 1
    assert p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith(path + ":"), lines
    assert "No such file" in lines[0] or "cannot open" in lines[0]


def test_run_with_bad_config_exits_1(tmp_path):
    path = write(tmp_path, "bad.json", BAD)
    p = run("-c", path)
    assert p.returncode == 1
    assert f"{path}:4: " in p.stderr and f"{path}:9: " in p.stderr


def test_bind_failure_exits_nonzero_with_a_clear_message(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        path = write(tmp_path, "inuse.json", daemon_config(port))
        assert run("-t", "-c", path).returncode == 0
        p = run("-c", path, timeout=20)
    assert p.returncode != 0
    assert p.returncode not in (-signal.SIGSEGV, -signal.SIGABRT)
    lines = [x for x in p.stderr.splitlines() if x]
    errors = [x for x in lines if x.startswith("ERROR ")]
    assert errors, p.stderr
    assert f"127.0.0.1:{port}" in errors[0] and "Address already in use" in errors[0], errors
    for line in lines:
        assert re.match(r"^(INFO|WARN|ERROR|DEBUG) ", line), line


def test_unwritable_access_log_exits_1_with_a_clear_message(tmp_path):
    path = write(tmp_path, "al.json",
                 daemon_config(free_port(), access_log="/nonexistent-dir/lg/access.log"))
    p = run("-c", path)
    assert p.returncode == 1
    errors = [x for x in p.stderr.splitlines() if x.startswith("ERROR ")]
    assert errors and "/nonexistent-dir/lg/access.log" in errors[0], p.stderr


def test_sigint_stops_gracefully(tmp_path):
    port = free_port()
    path = write(tmp_path, "int.json", daemon_config(port))
    proc = subprocess.Popen([binary(), "-c", path], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=sanitizer_env(clean_aws_env()))
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopping signal=SIGINT" in err
    for marker in SANITIZER_MARKERS:
        assert marker not in err
