from __future__ import annotations

from django.db import migrations

import procrastinate_prefork.contrib.django.models


class Migration(migrations.Migration):
    """``FleetProcess.queues`` no longer uses ``django.contrib.postgres``'s
    ArrayField (see ``QueueListField``). State only: the model is unmanaged
    and the column stays ``varchar(255)[]``."""

    dependencies = [("procrastinate_prefork", "0001_initial")]

    operations = [
        migrations.AlterField(
            model_name="fleetprocess",
            name="queues",
            field=procrastinate_prefork.contrib.django.models.QueueListField(
                blank=True, null=True
            ),
        ),
    ]
