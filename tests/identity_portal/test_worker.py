import json

import pytest
from django.core.cache import cache

from identity_portal.services import WORKER_HEARTBEAT_KEY
from identity_portal.tasks import worker_heartbeat
from tests.fixtures.celery_worker import wait_for


@pytest.mark.broker
@pytest.mark.redis
def test_a_real_worker_runs_the_heartbeat_through_the_broker(
    celery_worker_process, client, transactional_db
):
    # transactional_db: the worker records the run (jobs.JobRun) in the database it
    # shares with the test, which must be emptied after.
    cache.delete(WORKER_HEARTBEAT_KEY)
    assert json.loads(client.get("/readyz").content)["worker_last_seen"] is None

    worker_heartbeat.delay()

    seen = wait_for(lambda: cache.get(WORKER_HEARTBEAT_KEY))
    assert json.loads(client.get("/readyz").content)["worker_last_seen"] == seen


def test_heartbeat_is_scheduled_by_beat(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["worker-heartbeat"]
    assert entry == {"task": "identity_portal.tasks.worker_heartbeat", "schedule": 30.0}


@pytest.mark.broker
@pytest.mark.redis
@pytest.mark.postgres
def test_a_job_run_by_a_real_worker_is_recorded_and_read_by_metrics(
    celery_worker_process, client, transactional_db
):
    from jobs.choices import JobOutcome
    from jobs.models import JobRun
    from tests.identity_portal.test_metrics import scrape, value

    worker_heartbeat.delay()

    run = wait_for(
        lambda: JobRun.objects.filter(
            name="identity_portal.tasks.worker_heartbeat", last_finished_at__isnull=False
        ).first()
    )
    families = scrape(client)
    assert (run.last_outcome, run.runs, run.interval_seconds) == (JobOutcome.SUCCESS, 1, 30)
    assert (
        value(families, "portal_job_last_run_timestamp_seconds", periodic_job="worker-heartbeat")
        == run.last_finished_at.timestamp()
    )
    assert value(families, "portal_job_last_run_success", periodic_job="worker-heartbeat") == 1
