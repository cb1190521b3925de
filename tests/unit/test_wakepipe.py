import asyncio
import os

from procrastinate_prefork.child import wakepipe


async def _read_all(fd):
    return [item async for item in wakepipe.read_wakes(fd)]


def test_what_the_supervisor_writes_the_child_reads_back():
    sent = [
        ("procrastinate_queue_v1#default", '{"type": "abort_job_requested"}'),
        wakepipe.JOB_INSERTED,
    ]
    r, w = os.pipe()
    os.set_blocking(w, False)
    wakepipe.send_wake(w, wakepipe.encode(sent))
    os.close(w)
    assert asyncio.run(_read_all(r)) == sent


def test_a_full_pipe_does_not_block_the_supervisor():
    r, w = os.pipe()
    os.set_blocking(w, False)
    data = wakepipe.encode([wakepipe.JOB_INSERTED])
    try:
        for _ in range(100_000):  # far past any pipe buffer
            wakepipe.send_wake(w, data)
    finally:
        os.close(r)
        os.close(w)


def test_a_dead_child_s_pipe_is_ignored():
    r, w = os.pipe()
    os.close(r)
    try:
        wakepipe.send_wake(w, wakepipe.encode([wakepipe.JOB_INSERTED]))
    finally:
        os.close(w)


def test_job_inserted_notifications_collapse_into_one_wake_per_turn():
    abort = ("procrastinate_queue_v1#default", '{"type": "abort_job_requested"}')
    inserted = ("procrastinate_queue_v1#default", '{"type": "job_inserted"}')
    heard = [inserted, abort, inserted, ("x", "not json"), ("y", "[1]")]
    assert wakepipe.to_forward(heard, wake=False) == [abort, wakepipe.JOB_INSERTED]


def test_a_requested_wake_is_sent_with_nothing_heard():
    assert wakepipe.to_forward([], wake=True) == [wakepipe.JOB_INSERTED]
    assert wakepipe.to_forward([], wake=False) == []
