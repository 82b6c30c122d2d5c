"""Console forms: they validate shapes for people; the services decide."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from clients.auth_methods import auth_method_choices
from clients.constants import DEFAULT_AUTH_METHODS
from clients.models import Audience, Machine
from clients.services import audience_uri_check, machine_input_check

# Service argument names that differ from the form's field names.
_FORM_FIELD = {"scopes": "allowed_scopes", "audiences": "allowed_audiences"}


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.replace("\n", ",").split(",") if part.strip()]


class MachineForm(forms.ModelForm):
    tags = forms.CharField(required=False, help_text="Comma-separated.")
    ip_allowlist = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="CIDRs, one per line or comma-separated; empty: any address.",
    )
    auth_methods = forms.MultipleChoiceField(
        choices=auth_method_choices,
        widget=forms.CheckboxSelectMultiple,
        initial=list(DEFAULT_AUTH_METHODS),
        label="Authentication methods",
        help_text="How the machine may prove who it is. A secret is created on registration "
        "only when a secret method is allowed.",
    )

    class Meta:
        model = Machine
        fields = [
            "name",
            "description",
            "owner_team",
            "owner_email",
            "tags",
            "allowed_scopes",
            "default_scopes",
            "allowed_audiences",
            "default_audience",
            "access_token_ttl",
            "max_secret_age",
            "rotation_grace",
            "ip_allowlist",
            "auth_methods",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "name" in self.fields:  # absent on the read-only page of an auditor
            self.fields["name"].required = True
        if self.instance.pk:
            self.initial["tags"] = ", ".join(self.instance.tags)
            self.initial["ip_allowlist"] = "\n".join(self.instance.ip_allowlist)

    def clean_tags(self) -> list[str]:
        return _split(self.cleaned_data["tags"])

    def clean_ip_allowlist(self) -> list[str]:
        return _split(self.cleaned_data["ip_allowlist"])

    def clean(self):
        cleaned = super().clean()
        if not self.errors:
            try:
                machine_input_check(**self.service_kwargs())
            except ValidationError as exc:
                for field, messages in exc.message_dict.items():
                    field = _FORM_FIELD.get(field, field)
                    self.add_error(field if field in self.fields else None, messages)
        return cleaned

    def service_kwargs(self) -> dict:
        """The cleaned values in the services' vocabulary."""
        data = self.cleaned_data
        return {
            "name": data["name"],
            "description": data["description"],
            "owner_team": data["owner_team"],
            "owner_email": data["owner_email"],
            "tags": data["tags"],
            "scopes": [scope.name for scope in data["allowed_scopes"]],
            "default_scopes": [scope.name for scope in data["default_scopes"]],
            "audiences": [audience.uri for audience in data["allowed_audiences"]],
            "default_audience": data["default_audience"].uri if data["default_audience"] else None,
            "access_token_ttl": data["access_token_ttl"],
            "max_secret_age": data["max_secret_age"],
            "rotation_grace": data["rotation_grace"],
            "ip_allowlist": data["ip_allowlist"],
            "auth_methods": data["auth_methods"],
        }


class RotateSecretForm(forms.Form):
    grace = forms.IntegerField(
        min_value=0,
        help_text="Seconds the current secret keeps working (0: stops at once).",
    )


class AudienceForm(forms.ModelForm):
    class Meta:
        model = Audience
        fields = ["uri", "name", "description"]

    def clean_uri(self) -> str:
        if self.instance.pk:
            return self.instance.uri  # the URI tokens carry never changes
        try:
            return audience_uri_check(self.cleaned_data["uri"])
        except ValidationError as exc:
            raise ValidationError(exc.message_dict["uri"]) from exc
