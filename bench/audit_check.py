"""Compare the tokens the load tool received with the portal's audit trail.

Every token issued must leave exactly one ``token.issued`` event whose
``request_id`` is the X-Request-ID the client sent. A token received but not
audited is lost (never allowed); an event with no received token is allowed
only for requests still in flight when the load tool stopped, at most one per
connection.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from contextlib import closing
from dataclasses import asdict, dataclass

import dj_database_url

TOKEN_ISSUED = "token.issued"  # noqa: S105 (an event type, not a credential)
_QUERY = "SELECT request_id FROM audit_auditevent WHERE event_type = {p} AND request_id LIKE {p}"


class AuditUnavailable(RuntimeError):
    """The audit trail could not be read; the point cannot be checked."""


@dataclass(frozen=True)
class AuditComparison:
    received: int
    audited: int
    lost: int  # received, never audited
    extra: int  # audited, never received (in flight when wrk stopped)
    duplicates: int  # request ids with more than one event
    allowed_extra: int

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicates == 0 and self.extra <= self.allowed_extra

    def as_dict(self) -> dict[str, int | bool]:
        return {**asdict(self), "ok": self.ok}


def audit_compare(*, received: list[str], audited: list[str], connections: int) -> AuditComparison:
    audited_set = set(audited)
    received_set = set(received)
    counts = Counter(audited)
    return AuditComparison(
        received=len(received),
        audited=len(audited),
        lost=len(received_set - audited_set),
        extra=len(audited_set - received_set),
        duplicates=sum(1 for n in counts.values() if n > 1),
        allowed_extra=connections,
    )


def audited_request_ids(*, database_url: str, prefix: str) -> list[str]:
    """request_id of every token.issued event whose id starts with ``prefix``.

    ``prefix`` is made of [A-Za-z0-9-] only, so it needs no LIKE escaping.
    """
    if not prefix or not all(c.isalnum() or c == "-" for c in prefix):
        raise ValueError("request id prefixes are [A-Za-z0-9-]")
    cfg = dj_database_url.parse(database_url)
    if cfg["ENGINE"].endswith("sqlite3"):
        try:
            with closing(sqlite3.connect(cfg["NAME"], timeout=30)) as conn:
                rows = conn.execute(_QUERY.format(p="?"), (TOKEN_ISSUED, prefix + "%")).fetchall()
        except sqlite3.Error as exc:
            raise AuditUnavailable(f"reading the audit trail failed: {exc}") from exc
        return [row[0] for row in rows]
    import psycopg

    try:
        with psycopg.connect(
            host=cfg.get("HOST") or "127.0.0.1",
            port=cfg.get("PORT") or 5432,
            user=cfg.get("USER") or None,
            password=cfg.get("PASSWORD") or None,
            dbname=cfg["NAME"],
        ) as conn:
            rows = conn.execute(_QUERY.format(p="%s"), (TOKEN_ISSUED, prefix + "%")).fetchall()
    except psycopg.Error as exc:
        raise AuditUnavailable(f"reading the audit trail failed: {exc}") from exc
    return [row[0] for row in rows]


# Events above the sealed horizon (the highest sealed event id) are the unsealed backlog.
_BACKLOG_QUERY = (
    "SELECT (SELECT coalesce(max(id), 0) FROM audit_auditevent), "
    "(SELECT coalesce(max(event_id), 0) FROM audit_auditseal)"
)
_COUNT_ABOVE = "SELECT count(*) FROM audit_auditevent WHERE id > {p}"


class AuditTrail:
    """One connection to the portal's audit tables, to watch the sealer keep up.

    ``backend_pid`` (PostgreSQL) lets the harness leave this connection's own
    work out of the database CPU it charges to the tokens.
    """

    def __init__(self, database_url: str) -> None:
        cfg = dj_database_url.parse(database_url)
        if cfg["ENGINE"].endswith("sqlite3"):
            try:
                self._conn = sqlite3.connect(cfg["NAME"], timeout=30, isolation_level=None)
            except sqlite3.Error as exc:
                raise AuditUnavailable(f"reading the audit trail failed: {exc}") from exc
            self._p = "?"
            self.backend_pid = None
        else:
            import psycopg

            try:
                self._conn = psycopg.connect(
                    host=cfg.get("HOST") or "127.0.0.1",
                    port=cfg.get("PORT") or 5432,
                    user=cfg.get("USER") or None,
                    password=cfg.get("PASSWORD") or None,
                    dbname=cfg["NAME"],
                    autocommit=True,
                )
            except psycopg.Error as exc:
                raise AuditUnavailable(f"reading the audit trail failed: {exc}") from exc
            self._p = "%s"
            self.backend_pid = self._conn.info.backend_pid

    def top_and_horizon(self) -> tuple[int, int]:
        """(highest event id, highest sealed event id)."""
        top, horizon = self._conn.execute(_BACKLOG_QUERY).fetchone()
        return int(top), int(horizon)

    def unsealed(self) -> int:
        """Events not sealed yet (committed or not yet visible ones aside)."""
        _, horizon = self.top_and_horizon()
        return int(self._conn.execute(_COUNT_ABOVE.format(p=self._p), (horizon,)).fetchone()[0])

    def close(self) -> None:
        self._conn.close()
