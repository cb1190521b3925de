"""``schema --apply`` upgrades a fleet table of an earlier version and can be
run any number of times."""

from __future__ import annotations

from procrastinate_prefork.fleet import schema

NEW_COLUMNS = {"job_ids", "boot_id", "pid_namespace", "process_start"}


def _columns(db):
    return {
        name
        for (name,) in db.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'procrastinate_prefork_processes'"
        ).fetchall()
    }


def test_apply_adds_the_columns_of_a_later_version(db):
    db.execute(
        "ALTER TABLE procrastinate_prefork_processes "
        + ", ".join(f"DROP COLUMN {name}" for name in sorted(NEW_COLUMNS))
    )
    assert not NEW_COLUMNS & _columns(db)
    schema.apply(db)
    schema.apply(db)  # idempotent
    assert NEW_COLUMNS <= _columns(db)


JOB_INDEXES = {
    "procrastinate_prefork_jobs_worker_id_idx",
    "procrastinate_prefork_jobs_doing_idx",
}


def _job_indexes(db):
    return {
        name
        for (name,) in db.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'procrastinate_jobs'"
        ).fetchall()
    } & JOB_INDEXES


def test_apply_adds_the_job_indexes_of_a_later_version(db):
    db.execute("DROP INDEX " + ", ".join(sorted(JOB_INDEXES)))
    assert not _job_indexes(db)
    schema.apply(db)
    schema.apply(db)  # idempotent
    assert _job_indexes(db) == JOB_INDEXES


#: what 0005 (and schema --apply) add: the sweep turn's table, the index of
#: todo jobs by queue and the planner's statistics of queue and status
SWEEP_AND_COUNTS = {
    "procrastinate_prefork_sweep",
    "procrastinate_prefork_jobs_todo_queue_idx",
    "procrastinate_prefork_jobs_queue_status",
}


def _sweep_and_counts(db) -> set[str]:
    row = db.execute(
        "SELECT array_remove(ARRAY["
        "  to_regclass('procrastinate_prefork_sweep')::text,"
        "  to_regclass('procrastinate_prefork_jobs_todo_queue_idx')::text,"
        "  (SELECT stxname::text FROM pg_statistic_ext"
        "   WHERE stxname = 'procrastinate_prefork_jobs_queue_status')"
        "], NULL)"
    ).fetchone()
    return set(row[0])


def test_apply_adds_the_sweep_table_and_the_queue_counts_of_a_later_version(db):
    db.execute(
        "DROP TABLE procrastinate_prefork_sweep; "
        "DROP INDEX procrastinate_prefork_jobs_todo_queue_idx; "
        "DROP STATISTICS procrastinate_prefork_jobs_queue_status"
    )
    assert _sweep_and_counts(db) == set()
    schema.apply(db)
    schema.apply(db)  # idempotent
    assert _sweep_and_counts(db) == SWEEP_AND_COUNTS


#: what 0006 (and schema --apply) add: the events table, the fleet table's
#: written_at and finished_per_minute, the index of todo jobs by queue and id
LIVE_PAGE = {
    "procrastinate_prefork_events",
    "procrastinate_prefork_jobs_todo_queue_id_idx",
    "written_at",
    "finished_per_minute",
}


def _live_page(db) -> set[str]:
    row = db.execute(
        "SELECT array_remove(ARRAY["
        "  to_regclass('procrastinate_prefork_events')::text,"
        "  to_regclass('procrastinate_prefork_jobs_todo_queue_id_idx')::text"
        "] || ARRAY(SELECT column_name::text FROM information_schema.columns"
        "  WHERE table_name = 'procrastinate_prefork_processes'"
        "  AND column_name IN ('written_at', 'finished_per_minute')), NULL)"
    ).fetchone()
    return set(row[0])


def test_apply_adds_the_live_page_tables_of_a_later_version(db):
    db.execute(
        "DROP TABLE procrastinate_prefork_events; "
        "DROP INDEX procrastinate_prefork_jobs_todo_queue_id_idx; "
        "ALTER TABLE procrastinate_prefork_processes "
        "DROP COLUMN written_at, DROP COLUMN finished_per_minute"
    )
    assert _live_page(db) == set()
    schema.apply(db)
    schema.apply(db)  # idempotent
    assert _live_page(db) == LIVE_PAGE
