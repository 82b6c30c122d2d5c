"""The toolkit's Application columns the portal does not use are pinned in the database."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from clients.models import TOOLKIT_PINNED_COLUMNS, Machine

pytestmark = pytest.mark.django_db

MISLEADING = {
    "client_type": Machine.CLIENT_PUBLIC,
    "authorization_grant_type": Machine.GRANT_PASSWORD,
    "client_secret": "plain-toolkit-secret",
    "hash_client_secret": True,
    "redirect_uris": "https://evil.example/cb",
    "post_logout_redirect_uris": "https://evil.example/bye",
    "allowed_origins": "https://evil.example",
    "skip_authorization": True,
    "algorithm": Machine.HS256_ALGORITHM,
    "registration_source": Machine.RegistrationSource.DCR.value,
    "cimd_expires_at": "now",
    "user": "a user",
}


def test_every_pinned_column_has_a_misleading_value_tested():
    assert set(MISLEADING) == set(TOOLKIT_PINNED_COLUMNS)


def test_a_registered_machine_holds_exactly_the_pinned_values(machine_and_secret):
    machine, _ = machine_and_secret
    row = Machine.objects.values(*(f"{c}_id" if c == "user" else c for c in TOOLKIT_PINNED_COLUMNS))
    stored = row.get(pk=machine.pk)
    stored["user"] = stored.pop("user_id")
    assert stored == TOOLKIT_PINNED_COLUMNS


@pytest.mark.parametrize("column", sorted(MISLEADING))
def test_the_database_refuses_a_misleading_value(machine_and_secret, column):
    machine, _ = machine_and_secret
    value = MISLEADING[column]
    if column == "user":
        value = get_user_model().objects.create_user("someone")
    elif column == "cimd_expires_at":
        value = timezone.now()

    with pytest.raises(IntegrityError), transaction.atomic():
        Machine.objects.filter(pk=machine.pk).update(**{column: value})

    machine.refresh_from_db()
    assert getattr(machine, column) == TOOLKIT_PINNED_COLUMNS[column]


@pytest.mark.migrations
@pytest.mark.django_db(transaction=True)
def test_migrating_resets_misleading_values_left_by_the_previous_release(machine_and_secret):
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    machine, _ = machine_and_secret
    someone = get_user_model().objects.create_user("someone")
    executor = MigrationExecutor(connection)
    executor.migrate([("clients", "0002_clientsecret_digest_version")])
    try:
        # What a previous release (or a hand in the database) may have left in the row.
        values = {**MISLEADING, "cimd_expires_at": timezone.now(), "user_id": someone.pk}
        del values["user"]
        columns = ", ".join(f"{name} = %s" for name in values)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE clients_machine SET {columns} WHERE id = %s",  # noqa: S608 (our names)
                [*values.values(), machine.pk],
            )
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

    machine.refresh_from_db()
    assert {column: getattr(machine, column) for column in TOOLKIT_PINNED_COLUMNS} == (
        TOOLKIT_PINNED_COLUMNS
    )
    assert machine.name == "billing-job"
