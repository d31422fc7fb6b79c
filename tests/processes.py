"""gunicorn for the load test and the throughput benchmark: its command line, a free
port, stopping it, and Linux /proc readings of its worker processes."""

import os
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gunicorn_command(application: str, *, workers: int, port: int) -> list[str]:
    """gunicorn serving ``application`` with ``workers`` sync workers on 127.0.0.1:``port``."""
    command = [sys.executable, "-m", "gunicorn", application, "--preload",
               "--workers", str(workers), "--bind", f"127.0.0.1:{port}",
               "--timeout", "60", "--graceful-timeout", "5", "--log-level", "warning"]
    if os.path.isdir("/dev/shm"):
        # gunicorn's advice for containers: a worker's heartbeat file on a disk-backed
        # temporary directory can stall it.
        command += ["--worker-tmp-dir", "/dev/shm"]
    return command


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
