"""``schema --apply`` upgrades a fleet table of an earlier version and can be
run any number of times."""

from __future__ import annotations

from procrastinate_prefork import schema

NEW_COLUMNS = {"job_ids", "boot_id", "pid_namespace", "process_start"}


def _columns(db):
    return {name for (name,) in db.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = 'procrastinate_prefork_processes'").fetchall()}


def test_apply_adds_the_columns_of_a_later_version(db):
    db.execute("ALTER TABLE procrastinate_prefork_processes "
               + ", ".join(f"DROP COLUMN {name}" for name in sorted(NEW_COLUMNS)))
    assert not NEW_COLUMNS & _columns(db)
    schema.apply(db)
    schema.apply(db)  # idempotent
    assert NEW_COLUMNS <= _columns(db)
