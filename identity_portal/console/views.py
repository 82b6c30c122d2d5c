"""The console's pages beyond Django's admin: dashboard, audit log and export, machine actions.

Each view is wrapped by the admin site's ``admin_view`` (signed-in staff only,
never cached) and checks the role itself: every console user reads, only
security admins change. Writes are one service call each, which writes its
audit event in its own transaction.
"""

from __future__ import annotations

from datetime import datetime

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import FileResponse, Http404, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_POST

from audit.context import Actor, request_context
from audit.selectors import AUDIT_LOG_SCAN_LIMIT, AuditLogPage, audit_log_page
from audit.services import audit_export_bundle
from clients.cache_outcome import cache_failures_collected
from clients.models import Machine
from clients.services import machine_disable, machine_enable
from core.roles import can_read_audit, is_security_admin
from identity_portal.console.dashboard import dashboard_get
from identity_portal.console.forms import AuditExportForm, AuditFilterForm
from tokens.services import machine_tokens_revoke

PAGE_SIZE = 50


def _require_reader(request) -> None:
    if not can_read_audit(request.user):
        raise PermissionDenied


def _require_admin(request) -> None:
    if not is_security_admin(request.user):
        raise PermissionDenied


def _page(request, template: str, context: dict) -> TemplateResponse:
    # The admin's app list in a sidebar is the console's menu bar here, at the top.
    return TemplateResponse(
        request,
        template,
        {**admin.site.each_context(request), "is_nav_sidebar_enabled": False, **context},
    )


@require_GET
def dashboard(request):
    """The console's home: what a security team looks at first."""
    _require_reader(request)
    board = dashboard_get()
    return _page(
        request,
        "console/dashboard.html",
        {"title": "Dashboard", "board": board, "can_change": is_security_admin(request.user)},
    )


def _cursor_parse(value: str) -> tuple[datetime, int] | None:
    """``<ISO time>_<id>`` as the previous page wrote it; anything else starts afresh."""
    moment, _, event_id = (value or "").rpartition("_")
    try:
        at = datetime.fromisoformat(moment)
        number = int(event_id)
    except ValueError:
        return None
    if at.tzinfo is None or not 0 < number < 2**63:
        return None
    return at, number


@require_GET
def audit_log(request):
    """Every event, newest first, filtered; one keyset page at a time."""
    _require_reader(request)
    form = AuditFilterForm(request.GET or None)
    page, next_cursor = AuditLogPage(events=[], cursor=None), None
    if not form.is_bound:
        form = AuditFilterForm({})
    if form.is_valid():
        before = _cursor_parse(request.GET.get("before", ""))
        page = audit_log_page(
            query=form.query(), before=before, size=PAGE_SIZE, scan_limit=AUDIT_LOG_SCAN_LIMIT
        )
        if page.cursor is not None:
            params = request.GET.copy()
            params["before"] = f"{page.cursor[0].isoformat()}_{page.cursor[1]}"
            next_cursor = params.urlencode()
    first_page = request.GET.copy()
    first_page.pop("before", None)
    return _page(
        request,
        "console/audit_log.html",
        {
            "title": "Audit log",
            "form": form,
            "events": page.events,
            "scanned_to": page.scanned_to,
            "scan_limit": f"{AUDIT_LOG_SCAN_LIMIT:,}",
            "next_query": next_cursor,
            "first_query": first_page.urlencode(),
            "paged": bool(request.GET.get("before")),
            "export_form": AuditExportForm(
                initial={**(form.cleaned_data if form.is_valid() else {}), "format": "jsonl"}
            ),
        },
    )


@require_POST
def audit_export(request):
    """The Export button: the API's signed zip for the log's filters (CSRF-checked POST)."""
    _require_reader(request)
    form = AuditExportForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The export was refused: " + _errors(form))
        return HttpResponseRedirect(reverse("console-audit-log"))
    handle, filename = audit_export_bundle(
        fmt=form.cleaned_data["format"],
        filters=form.filters(),
        actor=Actor.user(request.user),
        context=request_context(request),
    )
    response = FileResponse(
        handle, as_attachment=True, filename=filename, content_type="application/zip"
    )
    response["Cache-Control"] = "no-store"
    return response


def _errors(form) -> str:
    return "; ".join(
        f"{form.fields[name].label if name in form.fields else name}: {' '.join(errors)}"
        for name, errors in form.errors.items()
    )


_ACTIONS = {
    "disable": (machine_disable, "Machine {name} disabled: it gets no token from now on."),
    "enable": (machine_enable, "Machine {name} enabled."),
}


@require_POST
def machine_action(request, object_id: int, action: str):
    """Disable, enable, or revoke every token of one machine (security admins)."""
    _require_admin(request)
    if action not in (*_ACTIONS, "revoke-tokens"):
        raise Http404("No such action.")
    machine = get_object_or_404(Machine, pk=object_id, deleted_at__isnull=True)
    actor, context = Actor.user(request.user), request_context(request)
    with cache_failures_collected() as failures:
        try:
            if action == "revoke-tokens":
                count = machine_tokens_revoke(actor=actor, machine=machine, context=context)
                messages.success(
                    request,
                    f"{count} token(s) of {machine.name} revoked: introspection now "
                    "answers inactive for them.",
                )
            else:
                service, message = _ACTIONS[action]
                service(actor=actor, machine=machine, context=context)
                messages.success(request, message.format(name=machine.name))
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
    for message in failures:
        messages.warning(request, message)
    return HttpResponseRedirect(reverse("admin:clients_machine_change", args=[machine.pk]))


def audit_log_url(**filters: str) -> str:
    """The audit log filtered by ``filters`` (what the machine page links to)."""
    return reverse("console-audit-log") + "?" + urlencode(filters)
