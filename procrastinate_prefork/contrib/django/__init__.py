"""Django integration: ``manage.py prefork_worker``, migrations, health view, admin.

List ``"procrastinate_prefork.contrib.django"`` in INSTALLED_APPS after
``"procrastinate.contrib.django"``.
"""
