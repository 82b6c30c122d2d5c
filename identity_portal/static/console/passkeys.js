// Passkey pages of the console, next to django-otp-webauthn's own scripts (served from our
// static files, configured by the #otp_webauthn_config JSON element): no inline script.
//
// Loaded before them as a classic script: their messages go through gettext(), which the
// package expects from Django's translation catalogue view; the console is in English, so
// the identity function stands in and no catalogue script is needed.
"use strict";

if (typeof window.gettext !== "function") {
  window.gettext = (text) => text;
}

// After a passkey is registered: at first enrolment the answer carries the recovery codes,
// shown here once (as text, never as markup); on the passkeys page the list is reloaded.
document.addEventListener("otp_webauthn.register_complete", (event) => {
  const response = (event.detail && event.detail.response) || {};
  const codes = Array.isArray(response.recovery_codes) ? response.recovery_codes : null;
  const shown = document.getElementById("passkey-recovery");
  if (!codes || !shown) {
    window.location.reload();
    return;
  }
  const list = document.getElementById("recovery-codes");
  for (const code of codes) {
    const item = document.createElement("li");
    const text = document.createElement("code");
    text.textContent = String(code);
    item.appendChild(text);
    list.appendChild(item);
  }
  for (const hidden of document.querySelectorAll("[data-hide-after-passkey]")) {
    hidden.hidden = true;
  }
  shown.hidden = false;
  document.getElementById("mfa-continue").focus();
});
