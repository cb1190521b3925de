"""The live fleet page of the admin and its JSON endpoint.

The view tests run in this process with pytest-django; the browser test
drives Debian's chromium through Playwright against pytest-django's live
server while a real fleet runs on the same database. The docs' screenshots
come from it: ``PREFORK_SCREENSHOTS=1 scripts/test.sh
tests/integration/test_live_page.py -k browser_shows`` rewrites
docs/img/fleet-live.png, fleet-live-phone.png and fleet-list.png.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

pytest.importorskip("django")

from ..fleet_helper import REPO, Fleet, FleetFactory, defer, wait_for
from .test_health import insert_supervisor

BASE = "/admin/procrastinate_prefork/fleetprocess/"
PAGE = BASE + "live/"
JSON = BASE + "live.json"
SCREENSHOT = REPO / "docs" / "img" / "fleet-live.png"


@pytest.fixture
def staff_client(client, django_user_model):
    user = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(user)
    return client


@pytest.fixture
def plain_client(client, django_user_model):
    user = django_user_model.objects.create_user("plain", password="pw")
    client.force_login(user)
    return client


def _rows() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        return insert_supervisor(cursor, host="live-host", pid=5000, crash_loop=True)


@pytest.mark.django_db
@pytest.mark.parametrize("path", [PAGE, JSON])
def test_anonymous_and_non_staff_are_refused(client, plain_client, path):
    _rows()
    from django.test import Client

    anonymous = Client().get(path)
    assert anonymous.status_code == 302
    assert "/admin/login/" in anonymous["Location"]
    refused = plain_client.get(path)
    assert refused.status_code == 403
    assert b"live-host" not in refused.content


@pytest.mark.django_db
def test_json_shape_and_marks(staff_client):
    from django.db import connection

    sup_id = _rows()
    with connection.cursor() as cursor:
        # A child running job 77 whose heartbeat is older than the
        # supervisor's stalled timeout (30 s in insert_supervisor).
        cursor.execute(
            "UPDATE procrastinate_prefork_processes SET state = 'busy', job_id = 77,"
            " task_name = 't.slow', job_started_at = now() - interval '12 s',"
            " last_heartbeat = now() - interval '90 s'"
            " WHERE supervisor_id = %s AND slot = 0",
            [sup_id],
        )
    response = staff_client.get(JSON)
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    data = response.json()
    (supervisor,) = data["supervisors"]
    assert supervisor["host"] == "live-host" and supervisor["crash_loop"] is True
    assert supervisor["stale"] is False
    children = {c["slot"]: c for c in supervisor["children"]}
    assert set(children) == {0, 1}
    busy, idle = children[0], children[1]
    assert (busy["state"], busy["job_id"], busy["task_name"]) == ("busy", 77, "t.slow")
    assert busy["stale"] is True and idle["stale"] is False
    assert busy["job_age"] >= 12
    # procrastinate's job admin is installed in the test project: a link.
    assert busy["job_url"] == "/admin/procrastinate/procrastinatejob/77/change/"
    assert idle["job_url"] is None
    for key in ("pid", "rss_bytes", "jobs_done", "restarts", "uptime"):
        assert key in idle
    assert data["status"] == "unhealthy"  # the crash loop


@pytest.mark.django_db
def test_json_shows_and_counts_by_pool(staff_client):
    """A supervisor of two pools (issue 24): each child's pool, and each
    pool's queues, size and fresh children."""
    from django.db import connection

    sup_id = _rows()
    pools = [
        {"name": "cpu", "queues": ["cpu"], "concurrency": 1, "crash_loop": False},
        {"name": "io", "queues": ["io"], "concurrency": 1, "crash_loop": True},
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE procrastinate_prefork_processes SET pools = %s::jsonb"
            " WHERE id = %s",
            [json.dumps(pools), sup_id],
        )
        cursor.execute(
            "UPDATE procrastinate_prefork_processes SET pool = CASE slot"
            " WHEN 0 THEN 'cpu' ELSE 'io' END WHERE supervisor_id = %s",
            [sup_id],
        )
    (supervisor,) = staff_client.get(JSON).json()["supervisors"]
    assert {c["slot"]: c["pool"] for c in supervisor["children"]} == {0: "cpu", 1: "io"}
    assert [
        (p["name"], p["queues"], p["crash_loop"], p["fresh_children"])
        for p in supervisor["pools"]
    ] == [("cpu", ["cpu"], False, 1), ("io", ["io"], True, 1)]


@pytest.mark.django_db
def test_json_queues_chart_and_events_come_from_the_database(staff_client, monkeypatch):
    """The queues a supervisor names (waiting counted up to the cap, running,
    the oldest waiting job's age), its per-minute counts summed into the
    chart, and an event of the events table with its job's admin URL."""
    from django.db import connection

    from procrastinate_prefork.contrib.django import dashboard

    monkeypatch.setattr(dashboard, "WAITING_CAP", 3)
    with connection.cursor() as cursor:
        sup_id = insert_supervisor(cursor, host="q-host", queues=["mail", "idle"])
        minute = int(time.time() // 60)
        cursor.execute(
            "UPDATE procrastinate_prefork_processes SET finished_per_minute = %s"
            " WHERE id = %s",
            [json.dumps({str(minute - 1): 5, str(minute - 40): 9}), sup_id],
        )
        cursor.execute(
            "SELECT procrastinate_defer_jobs_v1(array_agg(ROW('mail', 't', 0, NULL,"
            " NULL, '{}'::jsonb, NULL)::procrastinate_job_to_defer_v1))"
            " FROM generate_series(1, 4)"
        )
        cursor.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status)"
            " VALUES ('mail', 't', '{}', 'doing') RETURNING id"
        )
        (running,) = cursor.fetchone()
        cursor.execute(
            "INSERT INTO procrastinate_prefork_events (kind, host, supervisor_id,"
            " queues, slot, pid, job_id, task_name, cause, signal, rss_bytes)"
            " VALUES ('crash', 'q-host', %s, '{mail}', 0, 77, %s, 't', 'killed',"
            " 9, 1048576)",
            [sup_id, running],
        )
    data = staff_client.get(JSON).json()
    queues = {q["queue"]: q for q in data["queues"]}
    assert set(queues) == {"idle", "mail"}
    mail = queues["mail"]
    assert (mail["waiting"], mail["waiting_capped"], mail["running"]) == (3, True, 1)
    assert mail["oldest_waiting_age"] is not None and mail["oldest_waiting_age"] >= 0
    assert queues["idle"]["waiting"] == 0
    assert queues["idle"]["oldest_waiting_age"] is None
    chart = data["finished_per_minute"]
    assert len(chart) == 15 and chart[-1]["partial"]
    assert sum(m["finished"] for m in chart) == 5  # 40 minutes ago: left out
    (event,) = data["events"]
    assert (event["kind"], event["job_id"], event["signal"]) == ("crash", running, 9)
    assert (
        event["job_url"] == f"/admin/procrastinate/procrastinatejob/{running}/change/"
    )
    assert staff_client.get(JSON + "?queue=other").json()["events"] == []


@pytest.mark.django_db
def test_job_link_falls_back_to_text_without_the_job_admin(staff_client, monkeypatch):
    from procrastinate_prefork.contrib.django import live

    monkeypatch.setattr(live, "JOB_ADMIN_URL", "admin:no_such_model_change")
    from django.db import connection

    sup_id = _rows()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE procrastinate_prefork_processes SET state = 'busy', job_id = 5"
            " WHERE supervisor_id = %s AND slot = 0",
            [sup_id],
        )
    children = staff_client.get(JSON).json()["supervisors"][0]["children"]
    assert {c["job_id"]: c["job_url"] for c in children} == {5: None, None: None}


@pytest.mark.django_db
def test_no_secrets_in_the_page_or_the_json(staff_client, settings):
    from django.db import connection

    _rows()
    password = settings.DATABASES["default"].get("PASSWORD") or "no-password-set"
    with connection.cursor() as cursor:
        # Job arguments live in procrastinate's jobs table: never read here.
        cursor.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status)"
            " VALUES ('default', 't', '{\"secret\": \"hunter2-arg\"}', 'doing')"
            " RETURNING id"
        )
        (job_id,) = cursor.fetchone()
        cursor.execute(
            "UPDATE procrastinate_prefork_processes SET state = 'busy', job_id = %s"
            " WHERE slot = 0",
            [job_id],
        )
    for path in (PAGE, JSON):
        body = staff_client.get(path).content.decode()
        assert "hunter2-arg" not in body
        assert "postgres://" not in body and "postgresql://" not in body
        assert password not in body
    assert str(job_id) in staff_client.get(JSON).content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query", ["min_children=x", "host=", "queue=a&queue=b", "min_children=-1"]
)
def test_bad_parameters_are_4xx(staff_client, query):
    for path in (PAGE, JSON):
        response = staff_client.get(f"{path}?{query}")
        assert 400 <= response.status_code < 500, (path, query)


@pytest.mark.django_db
def test_the_live_page_lists_every_supervisor(staff_client):
    """Its queues and jobs per minute are those of the supervisors listed:
    no limit (the status command's and the health view's) there."""
    from django.db import connection

    from procrastinate_prefork.fleet import health

    count = health.DEFAULT_LIMIT + 2
    with connection.cursor() as cursor:
        for i in range(count):
            insert_supervisor(cursor, host=f"h{i:03}", pid=1000 + 10 * i, children=1)
    data = json.loads(staff_client.get(JSON).content)
    assert len(data["supervisors"]) == data["supervisors_total"] == count
    for path in (PAGE, JSON):
        assert staff_client.get(f"{path}?limit=2").status_code == 400


@pytest.mark.django_db
def test_changelist_links_the_live_page_and_filters_pass_on(staff_client, admin_client):
    _rows()
    assert PAGE in admin_client.get(BASE).content.decode()
    page = staff_client.get(PAGE + "?host=live-host")
    assert page.status_code == 200
    assert "live.json?host=live-host" in page.content.decode()
    assert staff_client.get(JSON + "?host=other").json()["supervisors"] == []
    assert staff_client.post(JSON).status_code == 405


# ------------------------------------------------------------ the browser


def _chromium() -> str:
    path = os.environ.get("PREFORK_CHROMIUM") or shutil.which("chromium")
    if not path:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    return path


@pytest.fixture
def browser_page() -> Iterator[object]:
    executable = _chromium()
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="playwright is not installed (pip install playwright)",
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            yield page
        finally:
            browser.close()


@pytest.fixture
def test_db_fleet(pg_url: str, live_server, tmp_path: Path) -> Iterator[Fleet]:
    """A fleet on pytest-django's test database, which the live server reads."""
    from django.db import connection

    parts = urlsplit(pg_url)
    url = urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))
    import psycopg

    # The tables are not Django's (unmanaged): an earlier test's fleet left
    # its rows and jobs, which this fleet would take over.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE procrastinate_jobs, procrastinate_workers,"
            " procrastinate_prefork_processes, procrastinate_prefork_events CASCADE"
        )
    factory = FleetFactory(url, tmp_path)
    yield factory.new()
    factory.cleanup()


def _children_pids(page: Any) -> set[int]:
    pids = page.eval_on_selector_all(
        "#fleet-live tr.child", "rows => rows.map(r => r.dataset.pid)"
    )
    return {int(p) for p in pids}


def test_browser_sees_a_killed_child_replaced_without_reload(
    live_server, admin_user, test_db_fleet, browser_page
):
    fleet = test_db_fleet.start("--concurrency", "2", "--heartbeat-interval", "1")
    old = set(fleet.wait_children(2))
    page = browser_page
    _log_in(page, live_server)
    wait_for(lambda: _children_pids(page) == old, 30, message="the children shown")
    # A marker that a reload would wipe out.
    page.evaluate("window.__noReload = 1")
    (job_id,) = defer(fleet.db_url, "sleep", seconds=600)
    link = page.wait_for_selector(
        f'#fleet-live tr.child a[href$="/procrastinatejob/{job_id}/change/"]',
        timeout=30_000,
    )
    busy = int(link.evaluate("a => a.closest('tr').dataset.pid"))
    victim = next(pid for pid in old if pid != busy)  # the idle one
    os.kill(victim, signal.SIGKILL)

    def replaced() -> set[int] | None:
        pids = _children_pids(page)
        return pids if len(pids) == 2 and victim not in pids else None

    new = wait_for(replaced, 40, message="the replacement shown")
    assert new - old and set(fleet.child_pids()) == new
    assert page.evaluate("window.__noReload") == 1
    _no_sideways_scrolling(page)
    fleet.kill_all()  # the sleeping job would hold a drain up for minutes


def _no_sideways_scrolling(page: Any) -> None:
    """At 1280x800 and on a phone (390 px) nothing scrolls sideways."""
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 800})
        overflow = page.evaluate(
            "document.documentElement.scrollWidth"
            " - document.documentElement.clientWidth"
        )
        assert overflow <= 0, width
    page.set_viewport_size({"width": 1280, "height": 800})


def _log_in(page: Any, live_server: Any) -> None:
    page.goto(live_server.url + "/admin/login/?next=" + PAGE)
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_url("**" + PAGE)


def _queue_cells(page: Any, queue: str) -> dict[str, str]:
    return page.evaluate(
        """queue => {
            const tr = document.querySelector(
                `#fleet-queues tr[data-queue="${queue}"]`);
            if (!tr) { return {}; }
            const out = {};
            for (const td of tr.cells) { out[td.dataset.label] = td.textContent; }
            return out;
        }""",
        queue,
    )


def _queue_in_db(db_url: str, queue: str) -> dict[str, str]:
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'todo'),"
            " count(*) FILTER (WHERE status = 'doing')"
            " FROM procrastinate_jobs WHERE queue_name = %s",
            [queue],
        ).fetchone()
    assert row is not None
    return {"waiting": str(row[0]), "running": str(row[1])}


def test_browser_shows_queues_throughput_and_a_crash_with_its_cause(
    live_server, admin_user, test_db_fleet, browser_page
):
    """The operator's three questions: the queue panel's numbers are the
    database's, the chart counts the jobs done, and a child killed with
    SIGKILL shows up with its signal and a link to its job's admin page."""
    fleet = test_db_fleet.start("--concurrency", "2", "--heartbeat-interval", "1")
    fleet.wait_children(2)
    done = defer(fleet.db_url, "noop", count=12)
    wait_for(
        lambda: not jobs_left(fleet.db_url, done), 30, message="the quick jobs done"
    )
    sleepers = defer(fleet.db_url, "sleep", count=2, seconds=600)
    for job_id in sleepers:
        fleet.running_child(job_id)
    defer(fleet.db_url, "noop", count=3)  # both children busy: these wait
    page = browser_page
    page.set_viewport_size({"width": 1280, "height": 800})
    _log_in(page, live_server)

    def panel_matches() -> bool:
        cells = _queue_cells(page, "default")
        wanted = _queue_in_db(fleet.db_url, "default")
        return all(cells.get(k) == v for k, v in wanted.items()) and bool(cells)

    wait_for(panel_matches, 30, message="the queue panel's numbers")
    assert _queue_cells(page, "default")["waiting"] == "3"
    assert _queue_cells(page, "default")["running"] == "2"
    assert _queue_cells(page, "default")["oldest waiting"] != "-"
    bars = wait_for(
        lambda: (
            (
                b := page.eval_on_selector_all(
                    "#fleet-chart rect.bar", "rs => rs.map(r => +r.dataset.finished)"
                )
            )
            and sum(b) >= len(done)
            and b
        ),
        30,
        message="the chart's bars",
    )
    assert len(bars) == 15
    victim_job = sleepers[0]
    os.kill(fleet.running_child(victim_job), signal.SIGKILL)
    link = page.wait_for_selector(
        f'#fleet-events tr[data-kind="crash"][data-job="{victim_job}"]'
        f' a[href$="/procrastinatejob/{victim_job}/change/"]',
        timeout=30_000,
    )
    assert link is not None
    page.wait_for_selector(
        f'#fleet-events tr[data-kind="recovered"][data-job="{victim_job}"]',
        timeout=30_000,
    )
    data = page.evaluate(
        "url => fetch(url, {credentials: 'same-origin'}).then(r => r.json())",
        JSON,
    )
    crash = next(
        e for e in data["events"] if e["kind"] == "crash" and e["job_id"] == victim_job
    )
    assert crash["signal"] == signal.SIGKILL and crash["task_name"] == "sleep"
    assert crash["pid"] and crash["slot"] in (0, 1)
    recovered = next(
        e
        for e in data["events"]
        if e["kind"] == "recovered" and e["job_id"] == victim_job
    )
    assert recovered["outcome"].startswith("retried")
    if os.environ.get("PREFORK_SCREENSHOTS"):
        wait_for(lambda: len(_children_pids(page)) == 2, 30, message="the replacement")
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        page.set_viewport_size({"width": 390, "height": 800})
        page.screenshot(
            path=str(SCREENSHOT.with_name("fleet-live-phone.png")), full_page=True
        )
    _no_sideways_scrolling(page)
    # The admin's list of the fleet fits 1280 px, filters and navigation too.
    page.goto(live_server.url + BASE)
    page.wait_for_selector("#result_list")
    cut = page.evaluate(
        "() => { const r = document.querySelector('#changelist .results');"
        " return r.scrollWidth - r.clientWidth; }"
    )
    if os.environ.get("PREFORK_SCREENSHOTS"):
        page.screenshot(path=str(SCREENSHOT.with_name("fleet-list.png")))
    assert cut <= 0
    fleet.kill_all()  # the sleeping jobs would hold a drain up for minutes


def jobs_left(db_url: str, ids: list[int]) -> bool:
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs"
            " WHERE id = ANY(%s) AND status <> 'succeeded'",
            [ids],
        ).fetchone()
    return bool(row and row[0])
