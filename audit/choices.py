"""The audit trail's vocabulary."""

from django.db import models


class EventType(models.TextChoices):
    TOKEN_ISSUED = "token.issued"
    TOKEN_DENIED = "token.denied"
    TOKEN_REVOKED = "token.revoked"
    TOKEN_INTROSPECTED = "token.introspected"
    # One per run of the expired-token purge, with its count.
    TOKENS_PURGED = "token.purged"
    MACHINE_REGISTERED = "machine.registered"
    MACHINE_UPDATED = "machine.updated"
    MACHINE_DISABLED = "machine.disabled"
    MACHINE_ENABLED = "machine.enabled"
    MACHINE_DELETED = "machine.deleted"
    # Unused for STALE_MACHINE_DAYS: reported (and disabled when its policy says so).
    MACHINE_STALE = "machine.stale"
    SECRET_CREATED = "secret.created"
    SECRET_ROTATED = "secret.rotated"
    SECRET_REVOKED = "secret.revoked"
    SECRET_EXPIRED = "secret.expired"
    # The warning before a secret's maximum age (sent to its owner once).
    SECRET_EXPIRING = "secret.expiring"
    CLIENT_KEY_ADDED = "client_key.added"
    CLIENT_KEY_REMOVED = "client_key.removed"
    # Federation trusts of a machine (clients.federation): who may act as it with an external token.
    TRUST_ADDED = "trust.added"
    TRUST_REMOVED = "trust.removed"
    SCOPE_CREATED = "scope.created"
    SCOPE_UPDATED = "scope.updated"
    AUDIENCE_CREATED = "audience.created"
    AUDIENCE_UPDATED = "audience.updated"
    KEY_CREATED = "key.created"
    KEY_ACTIVATED = "key.activated"
    KEY_RETIRED = "key.retired"
    KEY_REVOKED = "key.revoked"
    KEY_REWRAPPED = "key.rewrapped"
    # A published signing-key row the keyring does not trust (recorded once per kid and reason).
    KEY_REJECTED = "key.rejected"
    USER_CREATED = "user.created"
    USER_UPDATED = "user.updated"
    USER_DELETED = "user.deleted"
    USER_PASSWORD_CHANGED = "user.password_changed"
    ROLE_GRANTED = "role.granted"
    ROLE_REVOKED = "role.revoked"
    CONSOLE_LOGIN = "console.login"
    CONSOLE_LOGIN_FAILED = "console.login_failed"
    CONSOLE_LOGOUT = "console.logout"
    # Second factor: an authenticator or passkey enrolled (recovery codes issued with the
    # first), a second factor accepted at sign-in, a failed or throttled code or passkey
    # assertion, a recovery code spent, a passkey removed by its user, and a superuser's
    # reset of someone's factors.
    CONSOLE_MFA_ENROLLED = "console.mfa_enrolled"
    CONSOLE_MFA_VERIFIED = "console.mfa_verified"
    CONSOLE_MFA_FAILED = "console.mfa_failed"
    CONSOLE_MFA_RECOVERY_USED = "console.mfa_recovery_used"
    CONSOLE_MFA_DEVICE_REMOVED = "console.mfa_device_removed"
    CONSOLE_MFA_RESET = "console.mfa_reset"
    # A console page or action refused to the signed-in user (a forced URL, say).
    CONSOLE_ACCESS_DENIED = "console.access_denied"
    WEBHOOK_CREATED = "webhook.created"
    WEBHOOK_UPDATED = "webhook.updated"
    WEBHOOK_SECRET_ROTATED = "webhook.secret_rotated"
    WEBHOOK_DELETED = "webhook.deleted"
    AUDIT_EXPORTED = "audit.exported"
    AUDIT_PRUNED = "audit.pruned"


class ActorKind(models.TextChoices):
    USER = "user"
    MACHINE = "machine"
    SYSTEM = "system"
    CLI = "cli"
    ANONYMOUS = "anonymous"


class Outcome(models.TextChoices):
    SUCCESS = "success"
    FAILURE = "failure"


class CheckpointKind(models.TextChoices):
    SCHEDULED = "scheduled"
    EXPORT = "export"
    PRUNE = "prune"
