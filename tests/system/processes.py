"""gunicorn for the load test, the fault tests and the throughput benchmark: its command
line, a free port, starting it on the pytest run's test database, stopping it, and Linux
/proc readings of its worker processes."""

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gunicorn_command(application: str, *, workers: int, port: int, timeout: int = 60) -> list[str]:
    """gunicorn serving ``application`` with ``workers`` sync workers on 127.0.0.1:``port``;
    a worker silent for ``timeout`` seconds is aborted (SIGABRT, then SIGKILL)."""
    command = [sys.executable, "-m", "gunicorn", application, "--preload",
               "--workers", str(workers), "--bind", f"127.0.0.1:{port}",
               "--timeout", str(timeout), "--graceful-timeout", "5", "--log-level", "warning"]
    if os.path.isdir("/dev/shm"):
        # gunicorn's advice for containers: a worker's heartbeat file on a disk-backed
        # temporary directory can stall it.
        command += ["--worker-tmp-dir", "/dev/shm"]
    return command


def database_url_of_this_run() -> str:
    """DATABASE_URL for the database this pytest run's connection uses (test_...)."""
    s = connection.settings_dict
    scheme = {"postgresql": "postgres", "mysql": "mysql"}[connection.vendor]
    auth = quote(s["USER"] or "", safe="")
    if s["PASSWORD"]:
        auth += ":" + quote(s["PASSWORD"], safe="")
    port = f":{s['PORT']}" if s["PORT"] else ""
    return f"{scheme}://{auth}@{s['HOST']}{port}/{quote(s['NAME'], safe='')}"


def site_environment(settings_module: str, **variables: str) -> dict[str, str]:
    """The environment for a gunicorn of the test site: ``settings_module`` on this run's
    test database, the repository importable, output unbuffered for the log."""
    return {**os.environ, "DJANGO_SETTINGS_MODULE": settings_module,
            "DATABASE_URL": database_url_of_this_run(),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1", **variables}


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log: Path
    path: str  # the webhook's path, probed with HEAD until it answers 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def workers(self) -> list[int]:
        return children(self.process.pid)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            pytest.fail(f"gunicorn exited with {self.process.returncode}:\n{self.log_text()[-20000:]}")


@contextmanager
def gunicorn(application: str, env: dict[str, str], log: Path, *, workers: int, path: str,
             timeout: int = 60) -> Iterator[Server]:
    """gunicorn serving ``application`` (output to ``log``) until the block ends, once
    ``path`` answers HEAD with 200 and all ``workers`` are up."""
    port = free_port()
    command = gunicorn_command(application, workers=workers, port=port, timeout=timeout)
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    server = Server(process, port, log, path)
    try:
        wait_until_serving(server, workers)
        yield server
    finally:
        stop(process)


def wait_until_serving(server: Server, workers: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        server.check_alive()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2)
            conn.request("HEAD", server.path)
            status = conn.getresponse().status
            conn.close()
            if status == 200 and len(server.workers()) == workers:
                return
        except OSError:
            pass
        time.sleep(0.2)
    server.check_alive()
    pytest.fail(f"gunicorn did not serve within {START_TIMEOUT} s:\n{server.log_text()[-20000:]}")


def stop(process: subprocess.Popen) -> None:
    """Stop gunicorn gracefully, killing it and its workers if that takes over 20 s."""
    workers = children(process.pid)
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        for pid in workers:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        process.kill()
        process.wait(timeout=10)


def children(pid: int) -> list[int]:
    """The process IDs whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            # The command name in parentheses may hold spaces: split after it.
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time the processes have used so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")
