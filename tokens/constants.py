"""Fixed values of the token format and protocol endpoints."""

# RFC 9068 section 2.1: the media type of a JWT access token.
ACCESS_TOKEN_TYP = "at+jwt"
ID_TOKEN_TYP = "JWT"
TOKEN_TYPE = "Bearer"
GRANT_CLIENT_CREDENTIALS = "client_credentials"

# The scope a machine needs to call the introspection endpoint (RFC 7662 section 2.1).
INTROSPECT_SCOPE = "tokens:introspect"
OPENID_SCOPE = "openid"

# Random bits in a jti: 18 bytes = 144 bits, above RFC 9068's "unique" and our 128-bit floor.
JTI_BYTES = 18

# Key states in which a key is published in JWKS and its signatures are trusted.
PUBLISHED_STATES = ("pending", "active", "retiring")

RSA_KEY_BITS = 3072

# Protocol endpoints refuse bodies larger than this before parsing them.
MAX_FORM_BYTES = 8192
# Unknown parameters are ignored (RFC 6749 section 3.2), so a client may send more than
# the protocol defines; the body bound above already caps the parsing work, and this
# only refuses a body that is nothing but separators with its own clear message.
MAX_FORM_FIELDS = 512
