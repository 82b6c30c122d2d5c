"""The second step of console sign-in: enrol an authenticator, or enter a code.

One URL (``/console/mfa/``) does what the signed-in user needs next: a user
without an authenticator enrols one (QR code rendered here as SVG, the key
also printed for typing), confirms it with a code and is shown their
recovery codes once; an enrolled user types a code from the authenticator or
a recovery code. Where browsers can use passkeys, the enrolment page also
offers registering one instead, and the code page offers an enrolled passkey
(``identity_portal.passkey_views``). Pages holding a key or codes are
``no-store``. Services in ``identity_portal.mfa`` and ``identity_portal.passkeys``
do every write and its audit event.
"""

from __future__ import annotations

import base64

import qrcode
import qrcode.image.svg
from django import forms
from django.contrib import admin
from django.contrib.auth.views import redirect_to_login
from django.http import HttpResponseRedirect
from django.middleware import csrf
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.cache import add_never_cache_headers, patch_cache_control
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django_otp import login as otp_login

from audit.context import request_context
from identity_portal.mfa import (
    mfa_authenticator_get,
    mfa_enrolment_confirm,
    mfa_enrolment_start,
    mfa_is_enrolled,
    mfa_recovery_codes_left,
    mfa_verify,
)
from identity_portal.passkeys import passkey_exists, passkeys_available


class CodeForm(forms.Form):
    otp_token = forms.CharField(
        label="Code",
        max_length=32,
        strip=True,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "autofocus": True, "spellcheck": "false"}
        ),
    )


def next_url(request) -> str:
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return reverse("admin:index")


def webauthn_config(request) -> dict:
    """What django-otp-webauthn's scripts read from ``#otp_webauthn_config``: URLs, CSRF token."""
    return {
        "autocompleteLoginFieldSelector": None,
        "nextFieldSelector": "input[name='next']",
        "csrfToken": csrf.get_token(request),
        "beginAuthenticationUrl": reverse("otp_webauthn:credential-authentication-begin"),
        "completeAuthenticationUrl": reverse("otp_webauthn:credential-authentication-complete"),
        "beginRegistrationUrl": reverse("otp_webauthn:credential-registration-begin"),
        "completeRegistrationUrl": reverse("otp_webauthn:credential-registration-complete"),
    }


def _no_store(response):
    add_never_cache_headers(response)
    patch_cache_control(response, no_store=True, private=True)
    return response


def _render(request, template: str, context: dict):
    return _no_store(
        TemplateResponse(
            request,
            template,
            {
                **admin.site.each_context(request),
                "is_nav_sidebar_enabled": False,
                "next": next_url(request),
                **context,
            },
        )
    )


def qr_svg(data: str) -> str:
    """``data`` as a QR code in SVG markup, drawn here: no image service, no script."""
    image = qrcode.make(data, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    return image.to_string(encoding="unicode")


def _verified(request, device):
    otp_login(request, device)
    # The session gained a privilege: a new session key, as Django does at sign-in.
    request.session.cycle_key()


@csrf_protect
@sensitive_post_parameters("otp_token")
def console_mfa(request):
    user = request.user
    if not user.is_authenticated:
        return redirect_to_login(request.get_full_path(), reverse("admin:login"))
    if user.is_verified():
        return HttpResponseRedirect(next_url(request))
    form = CodeForm(request.POST if request.method == "POST" else None)
    context = request_context(request)
    if mfa_is_enrolled(user=user):
        if request.method == "POST" and form.is_valid():
            device = mfa_verify(user=user, token=form.cleaned_data["otp_token"], context=context)
            if device is not None:
                _verified(request, device)
                return HttpResponseRedirect(next_url(request))
            form.add_error("otp_token", "That code is not valid. Try the current one.")
        with_passkey = passkeys_available() and passkey_exists(user=user)
        return _render(
            request,
            "console/mfa_verify.html",
            {
                "title": "Two-factor sign-in",
                "form": form,
                "has_authenticator": mfa_authenticator_get(user=user) is not None,
                "webauthn_config": webauthn_config(request) if with_passkey else None,
            },
        )
    device = mfa_enrolment_start(user=user)
    if request.method == "POST" and form.is_valid():
        enrolment = mfa_enrolment_confirm(
            user=user, device=device, token=form.cleaned_data["otp_token"], context=context
        )
        if enrolment is not None:
            _verified(request, enrolment.device)
            return _render(
                request,
                "console/mfa_recovery_codes.html",
                {
                    "title": "Your recovery codes",
                    "recovery_codes": enrolment.recovery_codes,
                    "codes_left": mfa_recovery_codes_left(user=user),
                },
            )
        form.add_error("otp_token", "That code is not valid. Check the time on your device.")
    return _render(
        request,
        "console/mfa_enrol.html",
        {
            "title": "Set up two-factor sign-in",
            "form": form,
            "qr_svg": mark_safe(qr_svg(device.config_url)),  # noqa: S308 (our own SVG)
            "manual_key": base64.b32encode(device.bin_key).decode("ascii"),
            "webauthn_config": webauthn_config(request) if passkeys_available() else None,
        },
    )
