"""Ready-made trusts for the platforms most workloads run on.

Each template turns a few plain values (a repository, a namespace) into the
issuer, subject and CEL condition of a trust, so nobody has to remember that
GitHub's issuer is ``https://token.actions.githubusercontent.com`` or that a
Kubernetes service account's ``sub`` is ``system:serviceaccount:NS:NAME``.
Values are quoted into CEL as JSON strings, so a value cannot end the literal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
GITLAB_ISSUER = "https://gitlab.com"

TEMPLATES = {
    "github": "GitHub Actions",
    "gitlab": "GitLab CI",
    "kubernetes": "Kubernetes service account",
}


class TemplateError(ValueError):
    """A template's values are missing or malformed; the message says which."""


@dataclass(frozen=True)
class TrustShape:
    issuer: str
    subject: str
    condition: str


def _literal(value: str) -> str:
    return json.dumps(value)


def _required(name: str, value: str | None) -> str:
    value = (value or "").strip()
    if not value:
        raise TemplateError(f"The {name} is required for this template.")
    if not value.isprintable() or len(value) > 200:
        raise TemplateError(f"The {name} must be printable and at most 200 characters.")
    return value


def trust_template(
    name: str,
    *,
    issuer: str | None = None,
    repository: str | None = None,
    project_path: str | None = None,
    ref: str | None = None,
    environment: str | None = None,
    namespace: str | None = None,
    service_account: str | None = None,
) -> TrustShape:
    """The issuer, subject and condition of template ``name`` for these values."""
    if name == "github":
        repository = _required("repository (OWNER/REPO)", repository)
        if repository.count("/") != 1:
            raise TemplateError("The repository is OWNER/REPO.")
        parts = [f"claims.repository == {_literal(repository)}"]
        if ref:
            parts.append(f"claims.ref == {_literal(_required('ref', ref))}")
        if environment:
            parts.append(f"claims.environment == {_literal(_required('environment', environment))}")
        return TrustShape(issuer=GITHUB_ISSUER, subject="", condition=" && ".join(parts))
    if name == "gitlab":
        project_path = _required("project path (GROUP/PROJECT)", project_path)
        parts = [f"claims.project_path == {_literal(project_path)}"]
        if ref:
            parts.append(f"claims.ref == {_literal(_required('ref', ref))}")
        if environment:
            parts.append(f"claims.environment == {_literal(_required('environment', environment))}")
        return TrustShape(
            issuer=(issuer or GITLAB_ISSUER).rstrip("/"), subject="", condition=" && ".join(parts)
        )
    if name == "kubernetes":
        issuer = _required("issuer (the API server's service-account issuer)", issuer)
        namespace = _required("namespace", namespace)
        service_account = _required("service account", service_account)
        if ":" in namespace or ":" in service_account:
            raise TemplateError("A namespace or service account name holds no colon.")
        return TrustShape(
            issuer=issuer,
            subject=f"system:serviceaccount:{namespace}:{service_account}",
            condition="",
        )
    raise TemplateError(f"Unknown template {name!r}; one of: {', '.join(TEMPLATES)}.")


def trust_fields_from_template(
    name: str, *, issuer: str | None, subject: str | None, condition: str | None, **values
) -> tuple[str, str, str]:
    """Issuer, subject and condition of a trust made from template ``name``.

    The template's, except a subject or condition given explicitly (``None``:
    not given), so the CLI and a declarative document narrow a template alike.
    ``values`` are the template's own (repository, namespace, ...).
    """
    shape = trust_template(name, issuer=issuer, **values)
    return (
        shape.issuer,
        subject if subject is not None else shape.subject,
        condition if condition is not None else shape.condition,
    )
