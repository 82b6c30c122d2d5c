"""The size limits on an external token's claims, before a CEL condition runs over them."""

from __future__ import annotations

import random

import pytest

from clients.federation.conditions import MAX_CLAIM_DEPTH, MAX_CLAIM_ITEMS, claims_within_bounds


def _reference(value, depth=0) -> bool:
    """The rule as first written: every value, scalars included, visited with its depth."""
    if depth > MAX_CLAIM_DEPTH:
        return False
    if isinstance(value, dict):
        return len(value) <= MAX_CLAIM_ITEMS and all(
            _reference(item, depth + 1) for item in value.values()
        )
    if isinstance(value, list):
        return len(value) <= MAX_CLAIM_ITEMS and all(_reference(item, depth + 1) for item in value)
    return True


def _nested(depth: int, leaf) -> object:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


@pytest.mark.parametrize(
    ("claims", "within"),
    [
        ({"sub": "repo:acme/billing", "aud": ["a", "b"], "iat": 1}, True),
        (_nested(MAX_CLAIM_DEPTH, "x"), True),  # a scalar at the deepest allowed level
        (_nested(MAX_CLAIM_DEPTH + 1, "x"), False),  # one level deeper
        (_nested(MAX_CLAIM_DEPTH, []), True),  # an empty list at the deepest level
        (_nested(MAX_CLAIM_DEPTH, {}), True),
        (_nested(MAX_CLAIM_DEPTH, [1]), False),  # its item would lie past the limit
        ({"a": list(range(MAX_CLAIM_ITEMS))}, True),
        ({"a": list(range(MAX_CLAIM_ITEMS + 1))}, False),
        ({f"c{n}": n for n in range(MAX_CLAIM_ITEMS + 1)}, False),
        ({"a": [{"b": list(range(MAX_CLAIM_ITEMS + 1))}]}, False),
        ("scalar", True),
    ],
)
def test_claims_are_within_bounds_by_depth_and_size(claims, within):
    assert claims_within_bounds(claims) is within
    assert _reference(claims) is within


def test_the_bounds_agree_with_the_rule_as_first_written_on_random_claims():
    rng = random.Random(4711)

    def claims(depth: int):
        kind = rng.random()
        if depth > MAX_CLAIM_DEPTH + 2 or kind < 0.4:
            return rng.choice(["s", 1, 2.5, None, True])
        # Large containers only of scalars, or the claims grow as 65 ** depth.
        size = rng.choice([0, 1, 2, 3, 3, 3, MAX_CLAIM_ITEMS, MAX_CLAIM_ITEMS + 1])
        if size > 3:  # a large container holds scalars only
            return [1] * size if kind < 0.55 else {f"k{n}": 1 for n in range(size)}
        if kind < 0.7:
            return [claims(depth + 1) for _ in range(size)]
        return {f"k{n}": claims(depth + 1) for n in range(size)}

    cases = [claims(0) for _ in range(400)]
    verdicts = [claims_within_bounds(case) for case in cases]

    assert verdicts == [_reference(case) for case in cases]
    assert 50 < verdicts.count(False) < 350  # both answers are exercised
