"""The plan of a declarative apply: one step per change, in the order it is applied."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Step:
    """One line of the plan: what happens to one entry, and which fields differ.

    Key and trust steps are named by their machine; ``detail`` says which key
    (kid, thumbprint) or trust (issuer, audience, subject, condition), and
    ``payload`` is what apply hands the service (never shown: a JWK to add, a
    kid or trust row to remove).
    """

    action: str  # create, change, enable, disable, unchanged; add, remove (keys, trusts)
    kind: str  # scope, audience, machine, key, trust
    name: str
    fields: tuple[str, ...] = ()
    detail: Mapping[str, str] = field(default_factory=dict)
    payload: Any = field(default=None, compare=False, repr=False)

    def as_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "action": self.action,
            "kind": self.kind,
            "name": self.name,
            "fields": list(self.fields),
        }
        if self.detail:
            shown["detail"] = dict(self.detail)
        return shown


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return sum(1 for step in self.steps if step.action != "unchanged")
