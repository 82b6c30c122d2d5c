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


class AuditEventSerializer(serializers.ModelSerializer):
    """One sealed event: its hashed record plus the seal, as exports write it."""

    def to_representation(self, instance: AuditEvent) -> dict:
        values = {name: getattr(instance, name) for name in chain.RECORD_FIELDS}
        return {
            **chain.event_record(values),
            "prev_hash": instance.prev_hash,
            "hash": instance.hash,
        }

    class Meta:
        model = AuditEvent
        fields = (*chain.RECORD_FIELDS, "prev_hash", "hash")
        read_only_fields = fields
