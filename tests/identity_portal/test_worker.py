import json

import pytest
from django.core.cache import cache

from identity_portal.services import WORKER_HEARTBEAT_KEY
from identity_portal.tasks import worker_heartbeat
from tests.fixtures.celery_worker import wait_for


@pytest.mark.broker
@pytest.mark.redis
def test_a_real_worker_runs_the_heartbeat_through_the_broker(celery_worker_process, client, db):
    cache.delete(WORKER_HEARTBEAT_KEY)
    assert json.loads(client.get("/readyz").content)["worker_last_seen"] is None

    worker_heartbeat.delay()

    seen = wait_for(lambda: cache.get(WORKER_HEARTBEAT_KEY))
    assert json.loads(client.get("/readyz").content)["worker_last_seen"] == seen


def test_heartbeat_is_scheduled_by_beat(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["worker-heartbeat"]
    assert entry == {"task": "identity_portal.tasks.worker_heartbeat", "schedule": 30.0}
