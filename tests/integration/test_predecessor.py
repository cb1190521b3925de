"""A supervisor declares a predecessor of its host name dead only on evidence
that a live process elsewhere cannot produce: the same boot and PID namespace
and no process with that pid and start time, or a heartbeat older than the
predecessor's own stalled timeout by the database's clock.

Predecessors are rows written here as a supervisor would, each with a job
``doing`` under a worker of a fresh heartbeat: only the predecessor rule (not
the sweep, with its 30 s stalled timeout) could recover them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid

import psycopg
import pytest

from ..fleet_helper import APP, defer, jobs, wait_for

HOST = "same-host"


def _own_identity(pid="self"):
    with open("/proc/sys/kernel/random/boot_id") as f:
        boot_id = f.read().strip()
    namespace = os.stat(f"/proc/{pid}/ns/pid").st_ino
    with open(f"/proc/{pid}/stat") as f:
        start = int(f.read().rsplit(")", 1)[1].split()[19])
    return boot_id, namespace, start


def _predecessor(
    db_url, pid, identity, *, heartbeat_age=0.0, stalled_timeout=30.0, started_ago=0.0
):
    """A supervisor row of HOST with one child running one job; the job id."""
    [job_id] = defer(db_url, "sleep", seconds=1)
    boot_id, namespace, start = identity or (None, None, None)
    with psycopg.connect(db_url, autocommit=True) as conn:
        [supervisor] = conn.execute(
            "INSERT INTO procrastinate_prefork_processes (kind, host, pid, state, "
            "stalled_timeout, boot_id, pid_namespace, process_start, last_heartbeat,"
            " started_at) VALUES ('supervisor', %s, %s, 'running', %s, %s, %s, %s, "
            "now() - make_interval(secs => %s), now() - make_interval(secs => %s)) "
            "RETURNING id",
            [
                HOST,
                pid,
                stalled_timeout,
                boot_id,
                namespace,
                start,
                heartbeat_age,
                started_ago,
            ],
        ).fetchone()
        [worker] = conn.execute(
            "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now()) "
            "RETURNING id"
        ).fetchone()
        conn.execute(
            "INSERT INTO procrastinate_prefork_processes (kind, host, pid, "
            "supervisor_id, slot, worker_id, state) VALUES ('child', %s, %s, %s, 0, "
            "%s, 'busy')",
            [HOST, pid + 1, supervisor, worker],
        )
        conn.execute(
            "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s "
            "WHERE id = %s",
            [worker, job_id],
        )
    return job_id


def _dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _recovered(fleet):
    return sorted(e["job_id"] for e in fleet.events("job_recovered"))


def test_other_identity_is_judged_by_its_heartbeat_only(fleet, db_url):
    other_boot = (str(uuid.uuid4()), *_own_identity()[1:])
    other_namespace = (_own_identity()[0], 1, 1)
    alive_elsewhere = _predecessor(db_url, _dead_pid(), other_boot)
    pid_one_elsewhere = _predecessor(db_url, 1, other_namespace)
    no_identity = _predecessor(db_url, _dead_pid(), None)
    silent = _predecessor(
        db_url, _dead_pid(), other_boot, heartbeat_age=60, stalled_timeout=10
    )
    fleet.start("--concurrency", "1", "--hostname", HOST)
    wait_for(
        lambda: jobs(db_url, [silent])[0]["status"] != "doing",
        message="the silent predecessor's job to be recovered",
    )
    assert _recovered(fleet) == [silent]
    for job_id in (alive_elsewhere, pid_one_elsewhere, no_identity):
        assert jobs(db_url, [job_id])[0]["status"] == "doing"
    assert fleet.stop(timeout=30) == 0


def test_same_namespace_pid_alive_or_reused(fleet, db_url):
    sleeper = subprocess.Popen(["sleep", "120"])
    try:
        boot_id, namespace, start = _own_identity(sleeper.pid)
        # the database's clock behind the host's: started_at says nothing
        alive = _predecessor(
            db_url, sleeper.pid, (boot_id, namespace, start), started_ago=30
        )
        reused = _predecessor(db_url, sleeper.pid, (boot_id, namespace, start - 100))
        gone = _predecessor(db_url, _dead_pid(), (boot_id, namespace, start))
        fleet.start("--concurrency", "1", "--hostname", HOST)
        wait_for(
            lambda: len(_recovered(fleet)) >= 2,
            message="the dead predecessors' jobs to be recovered",
        )
        assert _recovered(fleet) == sorted([reused, gone])
        assert jobs(db_url, [alive])[0]["status"] == "doing"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert fleet.stop(timeout=30) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="PID namespaces need root (unshare)")
@pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare(1)")
def test_same_host_name_in_two_pid_namespaces(fleet_factory, db_url):
    def command(*args):
        return [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            sys.executable,
            "-m",
            "procrastinate_prefork.cli",
            "--app",
            APP,
            "worker",
            "--fetch-job-polling-interval",
            "30",
            "--concurrency",
            "1",
            "--hostname",
            "pods",
            *args,
        ]

    first = fleet_factory.new("pod-a")
    first.start(command=command())
    [job_id] = defer(db_url, "sleep", seconds=20)
    wait_for(lambda: first.marks("start"), message="the job to start in pod a")
    with psycopg.connect(db_url, autocommit=True) as conn:
        pids = conn.execute(
            "SELECT DISTINCT pid FROM procrastinate_prefork_processes "
            "WHERE kind = 'supervisor'"
        ).fetchall()
    assert pids == [(1,)]  # each supervisor is pid 1 in its namespace

    second = fleet_factory.new("pod-b")
    second.start(command=command())
    assert second.events("predecessor_recovered") == []
    [row] = jobs(db_url, [job_id])
    assert (row["status"], row["attempts"]) == ("doing", 0)
    wait_for(
        lambda: jobs(db_url, [job_id])[0]["status"] == "succeeded",
        timeout=40,
        message="the job to end",
    )
    assert [(j, a) for j, a, _ in first.marks("start") + second.marks("start")] == [
        (job_id, 0)
    ]
    for fleet in (first, second):
        fleet.stop(timeout=30)
