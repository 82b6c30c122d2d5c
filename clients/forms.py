"""Console forms: they validate shapes for people; the services decide."""

from __future__ import annotations

import json

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from clients.auth_methods import auth_method_choices
from clients.constants import DEFAULT_AUTH_METHODS
from clients.models import Audience, Machine
from clients.services import MAX_JWK_BYTES, audience_uri_check, machine_input_check

# Service argument names that differ from the form's field names, and back.
_FORM_FIELD = {"scopes": "allowed_scopes", "audiences": "allowed_audiences"}
_SERVICE_ARG = {"allowed_scopes": "scopes", "allowed_audiences": "audiences"}


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.replace("\n", ",").split(",") if part.strip()]


# What a person reads next to each field (the model's names read "Ip allowlist").
LABELS = {
    "name": "Name",
    "description": "Description",
    "owner_team": "Owner (team)",
    "owner_email": "Owner contact (email)",
    "allowed_scopes": "Scopes it may ask for",
    "default_scopes": "Scopes given when it names none",
    "allowed_audiences": "Resource servers (audiences) it may address",
    "default_audience": "Audience when it names none",
    "access_token_ttl": "Token lifetime (seconds)",
    "max_secret_age": "Secret maximum age (seconds)",
    "rotation_grace": "Rotation grace (seconds)",
    "ip_allowlist": "Allowed source addresses",
    "jwks_uri": "JWKS URL (its private_key_jwt keys)",
}

# The registration form asks only this; the rest has defaults and is on the machine's page.
REGISTER_FIELDS = [
    "name",
    "owner_team",
    "owner_email",
    "allowed_scopes",
    "allowed_audiences",
    "access_token_ttl",
    "ip_allowlist",
    "auth_methods",
]

_CHECKBOXES = ("allowed_scopes", "default_scopes", "allowed_audiences")


class MachineForm(forms.ModelForm):
    tags = forms.CharField(required=False, help_text="Comma-separated.")
    ip_allowlist = forms.CharField(
        required=False,
        label=LABELS["ip_allowlist"],
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "10.0.0.0/8\n2001:db8::/32"}),
        help_text="Networks in CIDR notation, one per line. Empty: any address.",
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
            "secret_warning_period",
            "rotation_grace",
            "stale_action",
            "ip_allowlist",
            "auth_methods",
            "jwks_uri",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "name" in self.fields:  # absent on the read-only page of an auditor
            self.fields["name"].required = True
        for name, field in self.fields.items():
            field.label = LABELS.get(name, field.label)
            if name in _CHECKBOXES:
                field.widget = forms.CheckboxSelectMultiple(choices=field.choices)
                field.help_text = ""  # not the select list's "Hold down Control"
        if "access_token_ttl" in self.fields:
            self.fields[
                "access_token_ttl"
            ].help_text = (
                f"How long each access token is valid, 1 to {settings.ACCESS_TOKEN_MAX_TTL}."
            )
        if "description" in self.fields:
            self.fields["description"].widget.attrs.update({"rows": 2})
        if "allowed_audiences" in self.fields:
            self.fields["allowed_audiences"].help_text = (
                "At least one: every token is issued for one resource server. "
                "With exactly one, it is also the default."
            )
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
                machine_input_check(**self.service_kwargs(), registering=self.instance.pk is None)
            except ValidationError as exc:
                for field, messages in exc.message_dict.items():
                    field = _FORM_FIELD.get(field, field)
                    self.add_error(field if field in self.fields else None, messages)
        return cleaned

    def service_kwargs(self) -> dict:
        """The cleaned values in the services' vocabulary, for the fields the form has."""
        data = {
            "description": "",
            "owner_team": "",
            "owner_email": "",
            "tags": [],
            "allowed_scopes": [],
            "default_scopes": [],
            "allowed_audiences": [],
            "default_audience": None,
            "access_token_ttl": 600,
            "max_secret_age": None,
            "rotation_grace": 24 * 3600,
            "ip_allowlist": [],
            "auth_methods": list(DEFAULT_AUTH_METHODS),
            "secret_warning_period": None,
            "stale_action": "",
            "jwks_uri": "",
            **self.cleaned_data,
        }
        values = {
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
            "secret_warning_period": data["secret_warning_period"],
            "stale_action": data["stale_action"],
            "auth_methods": data["auth_methods"],
            "jwks_uri": data["jwks_uri"],
        }
        fields = {_SERVICE_ARG.get(name, name) for name in self.fields}
        return {key: value for key, value in values.items() if key in fields}


_GRACES = [(0, "none: the current secret stops at once"), (3600, "1 hour"), (86400, "24 hours")]
_GRACES += [(7 * 86400, "7 days"), (30 * 86400, "30 days")]


class ClientKeyForm(forms.Form):
    """One public JWK, pasted or uploaded; the service refuses anything but a public key."""

    jwk = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 8, "cols": 80}),
        label="Public JWK",
        help_text='One key as JSON, e.g. {"kty": "EC", "crv": "P-256", "x": "...", "y": "..."}.',
    )
    jwk_file = forms.FileField(required=False, label="or a file holding it")

    def clean(self):
        cleaned = super().clean()
        upload = cleaned.get("jwk_file")
        text = cleaned.get("jwk") or ""
        if upload is not None:
            if upload.size > MAX_JWK_BYTES:
                raise ValidationError("The file is too large for a JWK.")
            try:
                text = upload.read().decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValidationError("The file is not UTF-8 text.") from exc
        if not text.strip():
            raise ValidationError("Paste a JWK or choose a file.")
        try:
            cleaned["parsed"] = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ValidationError("Not JSON.") from exc
        return cleaned


class RotateSecretForm(forms.Form):
    grace = forms.TypedChoiceField(
        coerce=int,
        choices=_GRACES,
        label="The current secret keeps working for",
        help_text="Long enough to deploy the new secret everywhere this machine runs.",
    )

    def __init__(self, *args, policy: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if policy is not None and policy not in dict(_GRACES):
            self.fields["grace"].choices = sorted(
                [*_GRACES, (policy, f"{policy} seconds (this machine's policy)")]
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


class MachineRegisterForm(MachineForm):
    """The registration form: the few fields a new machine needs; the rest keep defaults."""

    tags = None

    class Meta(MachineForm.Meta):
        fields = REGISTER_FIELDS
