"""Statements per webhook, per scenario: the one table of these figures.

Exact, not ceilings to stay under: ``python -m bench --quick`` fails when a scenario
takes another number (``bench/queries.py``), and ``tests/webhook/test_query_counts.py``
asserts the same numbers from this table on every database. A change that saves a
statement updates this table, and bench/README.rst's copy, which a unit test
compares with it.

Counted as the database sees them (``CaptureStatements``): BEGIN/COMMIT, savepoints
and the delivery log included, the group chat task enqueued on a queue outside the
database except where a row says otherwise.
"""

STATEMENTS: dict[str, int] = {
    "customer's first message, booking found": 10,
    "customer's next message": 6,
    # One SELECT more than a customer's message, after the commit: the receipts that
    # may have arrived while it was stored (``receipts.settle_after_commit``).
    "manager reply": 7,
    "assistant message": 7,
    "redelivery": 3,
    "onConversationAdded, new conversation (booking found)": 9,
    # The lookup runs again after the commit: a booking committed meanwhile would
    # otherwise be missed by both sides.
    "customer's first message, no booking": 11,
    "ignored event (onParticipantAdded)": 2,
    # delivery INSERT; BEGIN; the message SELECT ... FOR UPDATE; its UPDATE; delivery
    # UPDATE; COMMIT.
    "delivery receipt": 6,
    # The same, without the message UPDATE: a retried receipt changes nothing.
    "delivery receipt, the same again": 5,
    # MEDIA_DOWNLOAD on: the download's task is enqueued, nothing is written for it.
    "customer's photo (MMS), next message, download queued": 6,
    "customer's next message, django-tasks-db queue, enqueued after the commit": 7,
    "customer's next message, django-tasks-db queue, ENQUEUE_IN_TRANSACTION": 7,
}
