"""Fixed values of notification delivery."""

# The header carrying ``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``.
SIGNATURE_HEADER = "X-Portal-Signature"
SIGNATURE_VERSION = "v1"
# Webhook signing secrets: a recognisable prefix (secret scanners) and 256 random bits.
WEBHOOK_SECRET_PREFIX = "mip_whsec_"
WEBHOOK_SECRET_BYTES = 32
# Domain separation of the AES-GCM associated data and of the outbox rows' MAC.
WEBHOOK_SECRET_AAD_LABEL = b"mip-webhook-secret-v1"
OUTBOX_MAC_LABEL = b"mip-notification-outbox-v1"
# How long a dispatcher holds a delivery it is sending before another may take it.
DELIVERY_LEASE_SECONDS = 120
# Response bytes of a webhook receiver kept with an attempt (never shown as HTML).
ATTEMPT_ERROR_MAX = 255
URL_MAX_LENGTH = 2000
