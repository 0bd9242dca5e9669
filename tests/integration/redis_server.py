"""A real redis-server for tests, and a "blackhole" TCP listener.

    srv = RedisServer()                    # /usr/bin/redis-server on a free port
    srv.client().keys("lg:*")              # python3-redis client (decode_responses)
    srv.kill(); srv.restart()              # SIGKILL, then the same port again
    srv.pause(); srv.resume()              # SIGSTOP / SIGCONT: a Redis that hangs, then answers late
    RedisServer(password="pw")             # --requirepass; client() authenticates
    srv.stop()

    hole = Blackhole()                     # accepts connections, never answers
    hole.port; hole.accepted; hole.stop()

redis-server runs with `--save '' --appendonly no` (nothing is written to
disk) in a private directory, bound to 127.0.0.1 only.
Run with Debian's /usr/bin/python3 (python3-redis).
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import redis

REDIS_SERVER = "/usr/bin/redis-server"


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server process on 127.0.0.1:port. start() runs at construction."""

    def __init__(self, port=None, extra_args=(), timeout=10, password=None):
        self.port = port or _free_port()
        self.host = "127.0.0.1"
        self.password = password
        self.extra_args = list(extra_args)
        self.timeout = timeout
        self.workdir = tempfile.mkdtemp(prefix="lambdagate-redis-")
        self.log_path = os.path.join(self.workdir, "redis.log")
        self.proc = None
        self.start()

    def start(self):
        """Run redis-server on self.port and wait until it answers PING."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--dir", self.workdir, "--logfile", self.log_path,
                *(["--requirepass", self.password] if self.password else []),
                *self.extra_args]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self.timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n"
                                   + self.log_text())
            try:
                if self.client(socket_timeout=0.5).ping():
                    return self
            except redis.exceptions.RedisError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("redis-server did not answer PING:\n" + self.log_text())
            time.sleep(0.02)

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def client(self, **kw):
        kw.setdefault("socket_timeout", 5)
        kw.setdefault("password", self.password)
        return redis.Redis(host=self.host, port=self.port, decode_responses=True, **kw)

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def _end(self, sig, timeout=10):
        if not self.running:
            return
        self.proc.send_signal(signal.SIGCONT)  # a paused server could not end
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def pause(self):
        """SIGSTOP: connections stay open, nothing is answered until resume()."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        """SIGTERM (a clean shutdown)."""
        self._end(signal.SIGTERM)

    def kill(self):
        """SIGKILL: connections are reset, nothing is flushed."""
        self._end(signal.SIGKILL)

    def restart(self):
        """Kill if running, then start again on the same port (empty: no save)."""
        self.kill()
        deadline = time.monotonic() + self.timeout
        while True:  # the port may linger for a moment after a kill
            try:
                return self.start()
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def close(self):
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


class Blackhole:
    """A TCP listener on 127.0.0.1 that accepts every connection and never
    reads or writes: a server that hangs (Redis stuck, a dead middlebox)."""

    def __init__(self, port=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port or 0))
        self.sock.listen(128)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.host = "127.0.0.1"
        self.conns = []
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.conns.append(c)  # held open, never read
            self.accepted += 1

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        self.conns = []
