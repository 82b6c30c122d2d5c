"""Fixed values of the machine credential format, client authentication and throttling."""

# The client authentication methods a machine gets when none are named (clients.auth_methods).
DEFAULT_AUTH_METHODS = ("client_secret_basic", "client_secret_post")

# private_key_jwt: registered public keys per machine (two, so a key can be rolled over),
# and how far ahead an assertion's exp may be (RFC 7523 3: short-lived).
MAX_CLIENT_KEYS = 2
ASSERTION_MAX_LIFETIME = 300

# Client secrets start with this so secret scanners can spot a leak.
SECRET_PREFIX = "mip_cs_"
# 32 random bytes (256 bits), base64url without padding: 43 characters.
SECRET_RANDOM_BYTES = 32
# How much of a secret people see to recognise it: the prefix plus a few characters.
SECRET_DISPLAY_PREFIX_LENGTH = len(SECRET_PREFIX) + 4

# The format of new secret digests (ClientSecret.digest_version; clients.credentials):
# 2 binds the machine's client_id. Version 1 rows are earlier digests bound by a migration.
DIGEST_VERSION = 2
DIGEST_VERSIONS = (1, 2)

# A rotation keeps the new secret and at most one previous one usable, so a leaked
# old secret cannot linger through a series of rotations.
MAX_USABLE_SECRETS = 2
# Longest maximum secret age a machine may set: ten years. Far beyond any policy,
# far below what ``timedelta`` and the database column hold.
MAX_SECRET_AGE = 10 * 365 * 24 * 3600
# Most uses a use-limited (bootstrap) secret may be given.
MAX_SECRET_USES = 1_000_000
# Secrets the authentication cache keeps per machine: usable ones plus recently
# expired or revoked ones, so a denial can name the real reason.
CACHED_SECRETS_PER_MACHINE = 8

# RFC 6749 Appendix A: client-id and client-secret are *VSCHAR. Longer values are
# refused before any lookup (ours are 40 and 50 characters).
CLIENT_ID_MAX_LENGTH = 255
CLIENT_SECRET_MAX_LENGTH = 512
AUTHORIZATION_HEADER_MAX_LENGTH = 2048

# The machine authentication cache (``clients.machine_cache``): how long an entry
# lives without invalidation, and how long an unknown client_id is remembered.
# An entry is served at most MACHINE_CACHE_TTL seconds after the generation it is
# tagged with was read, whatever Redis says of its expiry.
MACHINE_CACHE_VERSION = 6  # bump when MachineAuthEntry, Machine or the encoding changes shape
# Tombstoned too on every change, for a release after a bump: during a rolling
# deploy the nodes still on the previous version read and fill those keys. (Version 2
# was pickled: a node of that release reading the new, authenticated tombstone fails
# that request instead of serving the entry, which is the safe side.)
MACHINE_CACHE_PREVIOUS_VERSIONS = (5, 4, 3, 2, 1)
MACHINE_CACHE_TTL = 300
MACHINE_CACHE_MISS_TTL = 30
# How long a tombstone under a previous version's key keeps a node of that release
# from caching what it read before a change (those nodes still rely on it).
MACHINE_CACHE_TOMBSTONE_TTL = 10
# How long a machine's generation (a random value written on every change) is kept.
# It must outlive every entry tagged with an earlier generation: those are served at
# most MACHINE_CACHE_TTL after they were read, so an hour leaves ample room for
# readers stalled by GC and for clocks of the nodes that disagree by minutes.
MACHINE_CACHE_GENERATION_TTL = 3600

# last_used_at is noted at most once per secret per this many seconds by a process,
# and a process writes what it noted in one batch at most this often (seconds).
LAST_USED_WRITE_INTERVAL = 60
LAST_USED_FLUSH_INTERVAL = 10

# Throttling of failed client authentication. Below the free allowance nothing
# happens; past it every further failure blocks the key for a doubling time,
# capped, and the count is forgotten after a quiet window: never a permanent
# lockout, because locking a machine out is itself a denial of service.
THROTTLE_CLIENT_IP_FREE_FAILURES = 5
THROTTLE_IP_FREE_FAILURES = 30
THROTTLE_BASE_DELAY = 1
THROTTLE_MAX_DELAY = 900
THROTTLE_WINDOW = 900

# How far ahead the console warns of a machine's last usable secret expiring.
SECRET_EXPIRY_WARNING_SECONDS = 14 * 24 * 3600

# A machine with no token for this long is listed as unused on the dashboard.
MACHINE_UNUSED_SECONDS = 30 * 24 * 3600
