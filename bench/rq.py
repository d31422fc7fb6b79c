"""The worker tier on RQ: group chat forwards a second with 1 and 2 ``rqworker``
processes, and the time from the webhook's answer to the copy's post at Twilio; and
the webhook's own answer time with the group chat's Twilio calls in the request
(django-tasks' immediate backend) against only queueing them on RQ.

Customers' first messages are posted through Django's test client (each makes a group
chat: two Twilio calls, creation and post) with the group chat's work sent to RQ on
the local Redis (django-tasks-rq, settings bench/settings_rq.py for the workers); the
workers, started before and listening, call a fake Twilio API (tests/fake_twilio.py)
through the real SDK, on this process's test database. PostgreSQL only: workers in
other processes on SQLite would measure its write lock.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.test import Client, override_settings

from bench.common import Row, percentile
from django_twilio_convlink.testing import post_signed
from tests.fake_twilio import ACCOUNT_SID, fake_twilio
from tests.helpers import payload, sid
from tests.settings_rq import ON_RQ, RQ_QUEUES, RQ_TASKS
from tests.system.processes import stop

ROOT = Path(__file__).resolve().parent.parent
SECTION = "RQ worker tier (group chat forwards)"
WEBHOOK = "/twilio/webhook/"
START_TIMEOUT = 30
DRAIN_TIMEOUT = 180


def run(quick: bool) -> list[Row]:
    if connection.vendor != "postgresql":
        return [Row(SECTION, "skipped: PostgreSQL only", float("nan"), "")]
    try:
        import django_rq
    except ImportError:
        return [Row(SECTION, "skipped: django-tasks-rq is not installed", float("nan"), "")]
    messages = 60 if quick else 300
    rows: list[Row] = []
    with fake_twilio() as twilio, override_settings(
            RQ_QUEUES=RQ_QUEUES, TASKS=RQ_TASKS,
            TWILIO_CONVLINK={**settings.TWILIO_CONVLINK, **ON_RQ, "ACCOUNT_SID": ACCOUNT_SID,
                             "API_BASE_URL": twilio.url}):
        queue = django_rq.get_queue("convlink")
        for workers in (1, 2):
            queue.empty()
            with rq_workers(workers, twilio.url):
                per_second, latencies = forward(twilio, messages, label=f"w{workers}")
            rows += [
                Row(SECTION, f"forwards a second, {workers} worker(s), {messages} customers' first messages",
                    per_second, "forwards/s"),
                Row(SECTION, f"webhook answered to copy posted, median, {workers} worker(s)",
                    statistics.median(latencies), "ms"),
                Row(SECTION, f"webhook answered to copy posted, p99, {workers} worker(s)",
                    percentile(latencies, 99), "ms"),
            ]
        queue.empty()
        rows += answer_times(twilio, messages, queue)
    return rows


# What one call to Twilio's API takes from a site's server, assumed for the row that
# says what the immediate backend costs a webhook in production (loopback takes < 1 ms).
TWILIO_CALL_SECONDS = 0.15


def answer_times(twilio, messages: int, queue) -> list[Row]:
    """How long the webhook takes to answer a customer's first message when the group
    chat's two Twilio calls run in the request (django-tasks' immediate backend, the
    default; with the stand-in answering at once, and after TWILIO_CALL_SECONDS as a
    real API would) and when they are only queued on RQ (no worker running meanwhile)."""
    rows: list[Row] = []
    for backend, latency, digit, label in (
            ("default", 0.0, 7, "immediate backend, Twilio calls in the request, stand-in on loopback"),
            ("default", TWILIO_CALL_SECONDS, 6, f"immediate backend, Twilio calls of "
                                                f"{TWILIO_CALL_SECONDS * 1000:.0f} ms in the request"),
            ("rq", 0.0, 8, "RQ backend, queued")):
        twilio.latency = latency
        made = sum(twilio.created.values())
        count = messages if not latency else min(messages, 60)
        # The immediate backend serves the default queue only (the RQ settings name "convlink").
        queue_name = "default" if backend == "default" else settings.TWILIO_CONVLINK["TASK_QUEUE"]
        with override_settings(TWILIO_CONVLINK={**settings.TWILIO_CONVLINK, "TASK_BACKEND": backend,
                                                "TASK_QUEUE": queue_name}):
            times = timed_posts(count, digit=digit)
        twilio.latency = 0.0
        if backend == "default" and sum(twilio.created.values()) - made != count:
            raise RuntimeError("the immediate backend did not make the group chats in the request")
        queue.empty()
        rows += [Row(SECTION, f"webhook answer, median, {label}", statistics.median(times), "ms"),
                 Row(SECTION, f"webhook answer, p99, {label}", percentile(times, 99), "ms")]
    return rows


def timed_posts(messages: int, *, digit: int) -> list[float]:
    client = Client()
    times = []
    for n in range(messages):
        data = payload("onMessageAdded_sms_from_customer", ConversationSid=sid("CH"),
                       Author=f"+1415{digit}66{n:04d}", Body=f"bench answer {digit} {n}", Index="0")
        started = time.perf_counter()
        response = post_signed(client, WEBHOOK, data)
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"the webhook answered {response.status_code}: {response.content!r}")
    return times


def forward(twilio, messages: int, *, label: str) -> tuple[float, list[float]]:
    """Post ``messages`` customers' first messages; wait until every copy is posted at
    the fake Twilio. Forwards a second (first answer to last post) and each message's
    latency in milliseconds."""
    client = Client()
    answered: dict[str, float] = {}
    for n in range(messages):
        body = f"bench {label} {n}: the heater in the bedroom is not working"
        data = payload("onMessageAdded_sms_from_customer", ConversationSid=sid("CH"),
                       Author=f"+1415{label[-1]}55{n:04d}", Body=body, Index="0")
        response = post_signed(client, WEBHOOK, data)
        if response.status_code != 200:
            raise RuntimeError(f"the webhook answered {response.status_code}: {response.content!r}")
        answered[body] = time.time()
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while not all(body in twilio.posted_at for body in answered):
        if time.monotonic() > deadline:
            missing = sum(body not in twilio.posted_at for body in answered)
            raise RuntimeError(f"{missing} of {messages} forwards not posted in {DRAIN_TIMEOUT} s")
        time.sleep(0.05)
    latencies = [(twilio.posted_at[body] - at) * 1000 for body, at in answered.items()]
    elapsed = max(twilio.posted_at[body] for body in answered) - min(answered.values())
    return messages / elapsed, latencies


class rq_workers:  # noqa: N801 - a context manager, used as one
    """``workers`` rqworker processes on the "convlink" queue, listening before the
    block starts, stopped after it."""

    def __init__(self, workers: int, twilio_url: str) -> None:
        self.workers, self.twilio_url = workers, twilio_url

    def __enter__(self) -> rq_workers:
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.settings_rq",
               "FAKE_TWILIO_URL": self.twilio_url,
               "BENCH_TEST_DATABASE_NAME": connection.settings_dict["NAME"],
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               "PYTHONUNBUFFERED": "1"}
        self.tmp = tempfile.TemporaryDirectory(prefix="convlink-rq-")
        self.processes, self.logs = [], []
        for number in range(self.workers):
            log = Path(self.tmp.name) / f"worker{number}.log"
            with log.open("wb") as out:
                self.processes.append(subprocess.Popen(
                    [sys.executable, "-m", "django", "rqworker", "--job-class", "django_tasks_rq.Job",
                     "convlink"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL))
            self.logs.append(log)
        deadline = time.monotonic() + START_TIMEOUT
        while not all("Listening on" in log.read_text(errors="replace") for log in self.logs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.processes):
                logs = "\n".join(log.read_text(errors="replace")[-2000:] for log in self.logs)
                self.__exit__(None, None, None)
                raise RuntimeError(f"the RQ workers did not start:\n{logs}")
            time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            stop(process)
        self.tmp.cleanup()
