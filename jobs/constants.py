"""Fixed values of the periodic-job runner."""

# A job is flagged in the console when it has not run for this many of its intervals.
OVERDUE_INTERVALS = 3
# Longest a run holds its lease: a run killed half-way blocks the next ones this long.
DEFAULT_LEASE_SECONDS = 600
# Retries of a task that met a transient error (the database or Redis briefly away).
TRANSIENT_MAX_RETRIES = 3
