"""The console page of periodic jobs: each job's last run, and a flag on those overdue."""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils import timezone

from core.admin import RoleGatedAdminMixin
from jobs.models import JobRun
from jobs.selectors import job_is_overdue, job_status_list


@admin.register(JobRun)
class JobRunAdmin(RoleGatedAdminMixin, admin.ModelAdmin):
    """Read-only: beat writes these rows; people read them."""

    security_admins_change = False
    list_display = (
        "name",
        "overdue",
        "last_outcome",
        "last_started_at",
        "last_duration_ms",
        "interval_seconds",
        "runs",
        "failures",
        "last_error",
    )
    readonly_fields = (*list_display, "last_finished_at", "last_result", "lease_until")
    exclude = ()

    @admin.display(boolean=True, description="not run for 3 intervals")
    def overdue(self, obj: JobRun) -> bool:
        return job_is_overdue(
            interval=obj.interval_seconds, last_started_at=obj.last_started_at, now=timezone.now()
        )

    def changelist_view(self, request, extra_context=None):
        for status in job_status_list():
            if status.overdue:
                self.message_user(
                    request,
                    f"Job {status.name} has not run for three of its intervals "
                    f"({status.interval_seconds} s): is beat running?",
                    messages.WARNING,
                )
            elif status.runs == 0 and status.last_started_at is None:
                self.message_user(request, f"Job {status.name} has not run yet.", messages.INFO)
        return super().changelist_view(request, extra_context)
