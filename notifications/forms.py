"""Console forms of webhook endpoints: shapes for people; the services decide."""

from __future__ import annotations

from django import forms

from notifications.constants import URL_MAX_LENGTH
from notifications.models import WebhookEndpoint
from notifications.transport import webhook_url_check


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=URL_MAX_LENGTH, assume_scheme="https")

    class Meta:
        model = WebhookEndpoint
        fields = ["team", "url", "description", "enabled"]

    def clean_url(self) -> str:
        try:
            return webhook_url_check(self.cleaned_data["url"])
        except forms.ValidationError as exc:
            raise forms.ValidationError(exc.message_dict["url"]) from None
