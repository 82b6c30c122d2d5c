"""Input and output shapes of the audit API; the filter shape is shared with the CLI."""

from __future__ import annotations

from rest_framework import serializers

from audit import chain
from audit.choices import EventType, Outcome
from audit.models import AuditEvent
from audit.selectors import AuditFilters


class AuditFilterSerializer(serializers.Serializer):
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    type = serializers.ListField(
        child=serializers.ChoiceField(choices=EventType.choices), required=False
    )
    actor = serializers.CharField(required=False, max_length=160)
    machine = serializers.CharField(required=False, max_length=128)
    outcome = serializers.ChoiceField(choices=Outcome.choices, required=False)
    source_ip = serializers.IPAddressField(required=False)

    def validate(self, attrs):
        since, until = attrs.get("since"), attrs.get("until")
        if since and until and since >= until:
            raise serializers.ValidationError({"until": "must be after since"})
        return attrs

    def filters(self) -> AuditFilters:
        data = self.validated_data
        return AuditFilters(
            since=data.get("since"),
            until=data.get("until"),
            event_types=tuple(data.get("type", ())),
            actor=data.get("actor", ""),
            machine=data.get("machine", ""),
            outcome=data.get("outcome", ""),
            source_ip=data.get("source_ip", ""),
        )


class AuditEventSerializer(serializers.Serializer):
    """One sealed event: its hashed record plus the seal, as exports write it.

    The fields are declared for the API schema; the values come from
    ``chain.event_record`` so they are exactly what the chain hashed.
    """

    position = serializers.IntegerField()
    occurred_at = serializers.CharField()
    sealed_at = serializers.CharField(allow_null=True)
    event_type = serializers.ChoiceField(choices=EventType.choices)
    actor_kind = serializers.CharField()
    actor_id = serializers.CharField()
    actor_display = serializers.CharField()
    target_kind = serializers.CharField()
    target_id = serializers.CharField()
    target_display = serializers.CharField()
    outcome = serializers.ChoiceField(choices=Outcome.choices)
    reason = serializers.CharField()
    source_ip = serializers.CharField(allow_null=True)
    user_agent = serializers.CharField()
    request_id = serializers.CharField()
    details = serializers.JSONField()
    prev_hash = serializers.CharField()
    hash = serializers.CharField()

    def to_representation(self, instance: AuditEvent) -> dict:
        values = {name: getattr(instance, name) for name in chain.RECORD_FIELDS}
        return {
            **chain.event_record(values),
            "prev_hash": instance.prev_hash,
            "hash": instance.hash,
        }
