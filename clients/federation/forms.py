"""The console's trust form: a template fills in the issuer, subject and condition."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from clients.federation.services import trust_input_check
from clients.federation.templates import TEMPLATES, TemplateError, trust_template
from clients.models import FederationTrust, Machine

_TEMPLATE_VALUES = (
    "repository",
    "project_path",
    "ref",
    "environment",
    "namespace",
    "service_account",
)


class TrustForm(forms.ModelForm):
    """Shapes only; ``trust_input_check`` (the service's own check) decides, per field."""

    template = forms.ChoiceField(
        required=False,
        choices=[("", "None: issuer, subject and condition by hand"), *TEMPLATES.items()],
        help_text="Fills in the issuer, subject and condition from the values below.",
    )
    repository = forms.CharField(required=False, help_text="GitHub: OWNER/REPO.")
    project_path = forms.CharField(required=False, help_text="GitLab: GROUP/PROJECT.")
    ref = forms.CharField(required=False, help_text="GitHub: refs/heads/main; GitLab: main.")
    environment = forms.CharField(required=False, help_text="GitHub, GitLab: environment.")
    namespace = forms.CharField(required=False, help_text="Kubernetes: namespace.")
    service_account = forms.CharField(required=False, help_text="Kubernetes: service account.")
    issuer = forms.CharField(required=False, max_length=255)
    jwks = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Only for an issuer the portal cannot reach (a private Kubernetes API "
        "server): its JWKS, e.g. from `kubectl get --raw /openid/v1/jwks`.",
    )

    class Meta:
        model = FederationTrust
        fields = ["machine", "issuer", "audience", "subject", "condition", "jwks", "description"]
        widgets = {"condition": forms.Textarea(attrs={"rows": 3})}
        help_texts = {
            "audience": "The aud the external token must carry.",
            "subject": "The exact sub the token must carry (optional with a condition).",
            "condition": 'CEL over the token\'s claims, e.g. claims.repository == "acme/billing"',
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "machine" in self.fields:
            self.fields["machine"].queryset = Machine.objects.filter(deleted_at__isnull=True)

    def clean(self):
        data = super().clean()
        name = data.get("template")
        if name:
            try:
                shape = trust_template(
                    name,
                    issuer=data.get("issuer") or None,
                    **{key: data.get(key) or None for key in _TEMPLATE_VALUES},
                )
            except TemplateError as exc:
                raise ValidationError(str(exc)) from exc
            data["issuer"] = shape.issuer
            data["subject"] = data.get("subject") or shape.subject
            data["condition"] = data.get("condition") or shape.condition
        try:
            checked = trust_input_check(
                issuer=data.get("issuer") or "",
                audience=data.get("audience") or "",
                subject=data.get("subject") or "",
                condition=data.get("condition") or "",
                jwks=data.get("jwks") or None,
                template=name or "",
                description=data.get("description") or "",
            )
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, messages)
            return data
        data.update(checked)
        return data

    def service_kwargs(self) -> dict:
        data = self.cleaned_data
        return {
            "machine": data["machine"],
            "issuer": data["issuer"],
            "audience": data["audience"],
            "subject": data["subject"],
            "condition": data["condition"],
            "jwks": data["jwks"] or None,
            "template": data.get("template") or "",
            "description": data["description"],
        }
