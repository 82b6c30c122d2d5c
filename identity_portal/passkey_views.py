"""Passkey ceremonies and the page where a console user manages their passkeys.

The four JSON endpoints are django-otp-webauthn's views, narrowed for the
console: only a user who may enter the console, only where browsers can use
passkeys (``passkeys_available``), no passwordless sign-in (the password always
comes first), and every write done by ``identity_portal.passkeys`` with its
audit event. They live under ``/console/mfa/`` so that a session still short of
its second factor reaches them, as it reaches the code page: registration is
refused there to a user who already has a second factor and has not used it
(the package's own check, fed with our idea of "enrolled"), so a password alone
never adds a passkey to an enrolled account.

The package's scripts are served from our static files and read their
configuration from a ``json_script`` element; ``console/passkeys.js`` (loaded
before them) supplies the ``gettext`` they call, so no inline script and no
translation catalogue view is needed under the console's CSP.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import Http404, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_otp import login as otp_login
from django_otp_webauthn import exceptions as webauthn_errors
from django_otp_webauthn.views import (
    BeginCredentialAuthenticationView,
    BeginCredentialRegistrationView,
    CompleteCredentialAuthenticationView,
    CompleteCredentialRegistrationView,
)

from audit.context import request_context
from core.roles import may_enter_console
from identity_portal.mfa import mfa_is_enrolled, mfa_recovery_codes_left
from identity_portal.mfa_views import next_url, webauthn_config
from identity_portal.passkeys import (
    MAX_PASSKEYS_PER_USER,
    LastSecondFactor,
    passkey_is_bound,
    passkey_label,
    passkey_list,
    passkey_register,
    passkey_remove,
    passkey_verify,
    passkeys_available,
)

REGISTER_STATE = "otp_webauthn_register_state"
AUTHENTICATE_STATE = "otp_webauthn_authentication_state"


class PasskeysUnavailable(webauthn_errors.OTPWebAuthnApiError):
    status_code = 404
    default_detail = "Passkeys are not available on this host."
    default_code = "passkeys_unavailable"


class TooManyPasskeys(webauthn_errors.OTPWebAuthnApiError):
    status_code = 409
    default_detail = f"You have {MAX_PASSKEYS_PER_USER} passkeys: remove one to add another."
    default_code = "too_many_passkeys"


def _verified(request, credential) -> None:
    otp_login(request, credential)
    # The session gained a privilege: a new session key, as at sign-in.
    request.session.cycle_key()


class _ConsoleCeremony:
    """Refusals common to the four endpoints, before the package's own checks."""

    def _parse_request_data(self, request):
        data = super()._parse_request_data(request)
        # A credential is a JSON object; a list, a string or a number is no credential.
        if not isinstance(data, dict):
            raise webauthn_errors.MalformedRequest()
        return data

    def initial(self, request, *args, **kwargs):
        if not passkeys_available():
            raise PasskeysUnavailable()
        if not may_enter_console(request.user):
            raise webauthn_errors.NotAuthenticated()
        super().initial(request, *args, **kwargs)


class _Registration(_ConsoleCeremony):
    def user_is_mfa_enrolled(self, user) -> bool:
        return mfa_is_enrolled(user=user)

    def check_can_register(self):
        if passkey_list(user=self.request.user).count() >= MAX_PASSKEYS_PER_USER:
            raise TooManyPasskeys()


class RegistrationBeginView(_Registration, BeginCredentialRegistrationView):
    pass


class RegistrationCompleteView(_Registration, CompleteCredentialRegistrationView):
    def post(self, *args, **kwargs):
        request = self.request
        state = self.get_state()  # popped and saved first: a challenge is used once
        registration = passkey_register(
            user=request.user,
            helper=self.get_helper(),
            state=state,
            data=request.data,
            context=request_context(request),
        )
        if not request.user.is_verified():
            _verified(request, registration.credential)
        body = {"id": registration.credential.pk}
        if registration.first_factor:
            body["recovery_codes"] = registration.recovery_codes
        return JsonResponse(body)


class AuthenticationBeginView(_ConsoleCeremony, BeginCredentialAuthenticationView):
    pass


class AuthenticationCompleteView(_ConsoleCeremony, CompleteCredentialAuthenticationView):
    def post(self, *args, **kwargs):
        request = self.request
        state = request.session.pop(AUTHENTICATE_STATE, None)
        request.session.save()  # spent even if what follows fails: no replay
        credential = passkey_verify(
            user=request.user,
            helper=self.get_helper(),
            state=state,
            data=request.data,
            context=request_context(request),
        )
        _verified(request, credential)
        return JsonResponse({"id": credential.pk, "redirect_url": next_url(request)})


# --- the page ------------------------------------------------------------------------


@require_GET
def passkeys_page(request):
    """The signed-in user's own second factors: passkeys (add, remove) and what else they have."""
    if not passkeys_available():
        raise Http404("Passkeys are not available on this host.")
    user = request.user
    rows = [
        {
            "id": c.pk,
            "label": passkey_label(c),
            "created": c.created_at,
            "used": c.last_used_at,
            "bound": passkey_is_bound(c),
        }
        for c in passkey_list(user=user)
    ]
    return TemplateResponse(
        request,
        "console/passkeys.html",
        {
            **admin.site.each_context(request),
            "is_nav_sidebar_enabled": False,
            "title": "Your passkeys",
            "passkeys": rows,
            "can_add": len(rows) < MAX_PASSKEYS_PER_USER,
            "codes_left": mfa_recovery_codes_left(user=user),
            "webauthn_config": webauthn_config(request),
        },
    )


@require_POST
def passkey_remove_view(request, credential_id: int):
    """Remove one of the user's own passkeys; another user's id is a 404, as an unknown one."""
    try:
        removed = passkey_remove(
            user=request.user, credential_id=credential_id, context=request_context(request)
        )
    except LastSecondFactor:
        messages.error(
            request,
            "This passkey is your only second factor: add another passkey before removing it.",
        )
        return HttpResponseRedirect(reverse("console-passkeys"))
    if not removed:
        raise Http404("No such passkey.")
    messages.success(request, f"Passkey {credential_id} removed.")
    return HttpResponseRedirect(reverse("console-passkeys"))
