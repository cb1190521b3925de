from __future__ import annotations

from django.db import migrations, models

# The same DDL as in procrastinate_prefork/sql/schema.sql (which 0001 runs
# whole, so on a new install it exists already: IF NOT EXISTS).
FORWARD = """
ALTER TABLE procrastinate_prefork_processes
    ADD COLUMN IF NOT EXISTS pool varchar(255),
    ADD COLUMN IF NOT EXISTS pools jsonb;
"""

REVERSE = """
ALTER TABLE procrastinate_prefork_processes
    DROP COLUMN IF EXISTS pool,
    DROP COLUMN IF EXISTS pools;
"""


class Migration(migrations.Migration):
    dependencies = [("procrastinate_prefork", "0006_live_page")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(sql=FORWARD, reverse_sql=REVERSE)],
            # the read-only admin's model (unmanaged): migration state only
            state_operations=[
                migrations.AddField(
                    model_name="fleetprocess",
                    name="pool",
                    field=models.CharField(blank=True, max_length=255, null=True),
                )
            ],
        )
    ]
