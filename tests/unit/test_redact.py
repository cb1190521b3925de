"""Job arguments are kept out of procrastinate's INFO logs (redact.py)."""

from __future__ import annotations

import logging

import pytest

from procrastinate_prefork.observability import redact

JOB = {
    "id": 7,
    "task_name": "send",
    "call_string": "send[7](token='S3CRET')",
    "task_kwargs": {"token": "S3CRET"},
}


@pytest.fixture
def records():
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Keep()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    redact.install("worker-3")
    yield seen
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_info_messages_and_extras_are_redacted(records):
    logger = logging.getLogger("procrastinate.worker.worker-3")
    logger.info(f"Starting job {JOB['call_string']}", extra={"job": JOB})
    logger.info(
        f"Waiting for job to finish: worker: {JOB['call_string']} (started 1 s ago)"
    )
    logging.getLogger("procrastinate.worker").error(
        "Job %s ended with status: Error", JOB["call_string"], extra={"job": JOB}
    )
    messages = [r.getMessage() for r in records]
    assert messages == [
        "Starting job send[7](...)",
        "Waiting for job to finish: worker: send[7](...) (started 1 s ago)",
        "Job send[7](...) ended with status: Error",
    ]
    assert all("S3CRET" not in str(r.__dict__) for r in records)
    assert JOB["task_kwargs"] == {"token": "S3CRET"}  # the job itself is untouched


def test_redacted_among_many_known_jobs(records):
    """A message names jobs learned long before and just now; the oldest
    known job is forgotten only past MAX_KNOWN."""
    logger = logging.getLogger("procrastinate.worker.worker-3")
    jobs = [
        {
            "id": i,
            "task_name": "send",
            "call_string": f"send[{i}](token='T{i}X')",
            "task_kwargs": {"token": f"T{i}X"},
        }
        for i in range(1000, 1000 + redact.JobArgsFilter.MAX_KNOWN)
    ]
    for job in jobs:
        logger.info("Starting job %s", job["call_string"], extra={"job": job})
    first, last = jobs[0]["call_string"], jobs[-1]["call_string"]
    logger.info(f"Waiting for jobs: {first}, {last}, send[5](token='T5X')")
    assert records[-1].getMessage() == (
        "Waiting for jobs: send[1000](...), send[2023](...), send[5](token='T5X')"
    )
    assert all(
        f"T{j['id']}X" not in r.getMessage()
        for r, j in zip(records, jobs, strict=False)
    )


def test_debug_keeps_the_arguments(records):
    logging.getLogger("procrastinate.worker.worker-3").debug(
        f"Loaded job info, about to start job {JOB['call_string']}", extra={"job": JOB}
    )
    assert "S3CRET" in records[0].getMessage()


@pytest.mark.parametrize(
    ("args", "secret"),
    [
        ({"conninfo": "postgresql://u:Dsn%zzPw@host/db"}, "Dsn%zzPw"),
        ({"conninfo": "postgresql://u:p%40ss@host/db"}, "p@ss"),
        ({"conninfo": "host=h password='se cret' dbname=d"}, "se cret"),
        ({"conninfo": "host=h password=s3cret"}, "s3cret"),
        ({"conninfo": "", "kwargs": {"password": "kw-secret"}}, "kw-secret"),
    ],
)
def test_connection_errors_lose_their_passwords(args, secret):
    text = f'invalid token: "{secret}" near {secret}'
    cleaned = redact.without_secrets(text, args)
    assert secret not in cleaned
    assert cleaned.startswith("invalid token:")


def test_connection_without_password_is_left_alone():
    text = 'could not translate host name "db" to address'
    assert redact.without_secrets(text, {"conninfo": "postgresql://u@db/x"}) == text
