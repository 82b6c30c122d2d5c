"""The console's forms: the audit log's filters (shared by its Export button)."""

from __future__ import annotations

from datetime import UTC, datetime

from django import forms
from django.core.exceptions import ValidationError

from audit.choices import EventType, Outcome
from audit.selectors import AuditFilters, AuditLogQuery
from audit.services import EXPORT_FORMATS

# The event types grouped by what they are about; "<group>.*" picks a whole group.
_GROUPS = {
    "token": "Tokens",
    "machine": "Machines",
    "secret": "Secrets",
    "scope": "Scopes",
    "audience": "Audiences",
    "key": "Signing keys",
    "user": "People",
    "role": "Roles",
    "console": "Console sign-in",
    "audit": "Audit trail",
}


def _type_choices() -> list:
    choices: list = [("", "any type")]
    for prefix, label in _GROUPS.items():
        members = [value for value in EventType.values if value.split(".", 1)[0] == prefix]
        if members:
            options = [(f"{prefix}.*", f"every {label.lower()} event")]
            options += [(value, value) for value in members]
            choices.append((label, options))
    return choices


def _types_for(choice: str) -> tuple[str, ...]:
    if choice.endswith(".*"):
        prefix = choice[:-2]
        return tuple(value for value in EventType.values if value.split(".", 1)[0] == prefix)
    return (choice,) if choice else ()


class UTCDateTimeField(forms.DateTimeField):
    """A moment typed in UTC, in the form the log shows it: ``2026-11-20 08:00:00 UTC``.

    A text box rather than the browser's ``datetime-local`` picker, which shows the
    viewer's locale (``mm/dd/yyyy, --:-- AM``) and reads as local time: a security
    team must be able to paste a time from the log and know which moment it means.
    ``T`` for the space, a ``Z`` or `` UTC`` suffix and no seconds are accepted too.
    """

    input_formats = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"]
    display_format = "%Y-%m-%d %H:%M:%S UTC"
    widget = forms.TextInput(
        attrs={
            "placeholder": "YYYY-MM-DD HH:MM:SS UTC",
            "autocomplete": "off",
            "spellcheck": "false",
            "size": "23",
        }
    )

    def to_python(self, value):
        if value in self.empty_values:
            return None
        text = str(value).strip()
        for suffix in ("UTC", "Z"):
            text = text.removesuffix(suffix)
        text = " ".join(text.replace("T", " ", 1).split())
        for fmt in self.input_formats:
            try:
                return datetime.strptime(text.strip(), fmt).replace(tzinfo=UTC)
            except ValueError:
                continue
        raise ValidationError("Enter a time as YYYY-MM-DD HH:MM:SS (UTC).", "invalid")

    def prepare_value(self, value):
        # What was typed is shown back in the one unambiguous form once it parses.
        if isinstance(value, str):
            try:
                value = self.to_python(value)
            except ValidationError:
                return value
        if isinstance(value, datetime):
            return value.astimezone(UTC).strftime(self.display_format)
        return value


class AuditFilterForm(forms.Form):
    since = UTCDateTimeField(required=False, label="From (UTC)")
    until = UTCDateTimeField(required=False, label="Until (UTC)")
    type = forms.ChoiceField(required=False, choices=_type_choices, label="Event type")
    outcome = forms.ChoiceField(
        required=False,
        choices=[("", "any outcome"), *Outcome.choices],
        label="Outcome",
    )
    actor = forms.CharField(
        required=False,
        max_length=160,
        label="Actor",
        widget=forms.TextInput(attrs={"placeholder": "user:3, machine:ID or an id"}),
    )
    machine = forms.CharField(
        required=False,
        max_length=128,
        label="Machine",
        widget=forms.TextInput(attrs={"placeholder": "client_id"}),
    )
    source_ip = forms.GenericIPAddressField(required=False, label="Source address")
    q = forms.CharField(
        required=False,
        max_length=128,
        label="Search",
        widget=forms.TextInput(attrs={"placeholder": "name, id, reason or request id"}),
    )

    def clean(self):
        cleaned = super().clean()
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since >= until:
            self.add_error("until", "Must be after the start of the range.")
        for name in ("actor", "machine", "q"):
            value = cleaned.get(name) or ""
            if any(ord(char) < 32 or ord(char) == 127 for char in value):
                self.add_error(name, "Control characters are not allowed.")
        return cleaned

    def filters(self) -> AuditFilters:
        data = self.cleaned_data
        return AuditFilters(
            since=data.get("since"),
            until=data.get("until"),
            event_types=_types_for(data.get("type") or ""),
            actor=(data.get("actor") or "").strip(),
            machine=(data.get("machine") or "").strip(),
            outcome=data.get("outcome") or "",
            source_ip=data.get("source_ip") or "",
        )

    def query(self) -> AuditLogQuery:
        return AuditLogQuery(filters=self.filters(), search=(self.cleaned_data.get("q") or ""))


class AuditExportForm(AuditFilterForm):
    """The Export button's POST: the log's filters (but the search) and a file format."""

    q = None  # a search is the console's; the export takes the API's filters only
    format = forms.ChoiceField(choices=[(fmt, fmt.upper()) for fmt in EXPORT_FORMATS])
