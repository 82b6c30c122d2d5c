#!/usr/bin/env python3
"""Verify a Machine Identity Portal audit export offline: needs Python 3.11+ and cryptography.

    python3 verify_audit_export.py EXPORT [--manifest EXPORT.manifest.json] [--jwks audit-keys.json]
                                          [--witness WITNESS.jsonl ...] [--chain chain.py]

Exit 0 when the file matches its signed manifest and every line chains; 1 naming the
first altered, missing or reordered line (or the witnessed checkpoint it contradicts);
2 when it cannot run or cannot read its input (no ``chain.py``, no ``cryptography``,
an unreadable file). The rules live in ``audit/chain.py`` (standard library +
cryptography only), loaded here by path so the portal and this script share one
implementation. Copy both files into one folder (``chain.py`` beside this script), or
run it from a checkout (``audit/chain.py``), or pass --chain PATH.
"""

import importlib.util
import sys
from pathlib import Path

CANNOT_RUN = 2  # as for an unreadable export: 1 means "altered", never "could not check"


def load_chain(path: Path):
    spec = importlib.util.spec_from_file_location("audit_chain", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while loading
    spec.loader.exec_module(module)
    return module


def chain_candidates(argv: list[str]) -> list[Path]:
    """--chain PATH (removed from argv), else chain.py beside this script, else the checkout's."""
    if "--chain" in argv:
        index = argv.index("--chain")
        if index + 1 >= len(argv):
            raise SystemExit("verify_audit_export: --chain needs a path")
        path = Path(argv[index + 1])
        del argv[index : index + 2]
        return [path]
    here = Path(__file__).resolve().parent
    return [here / "chain.py", here.parent / "audit" / "chain.py"]


def say(message: str) -> None:
    sys.stderr.write(f"verify_audit_export: {message}\n")


def run(argv: list[str]) -> int:
    try:
        candidates = chain_candidates(argv)
    except SystemExit as exc:
        say(str(exc).removeprefix("verify_audit_export: "))
        return CANNOT_RUN
    path = next((candidate for candidate in candidates if candidate.is_file()), None)
    if path is None:
        names = ", ".join(str(candidate) for candidate in candidates)
        say(f"chain.py not found (looked at {names}): copy it beside this script or pass --chain")
        return CANNOT_RUN
    try:
        chain = load_chain(path)
    except ImportError as exc:
        say(f"cannot load {path}: {exc} (pip install cryptography)")
        return CANNOT_RUN
    except (OSError, SyntaxError) as exc:
        say(f"cannot load {path}: {exc}")
        return CANNOT_RUN
    return chain.main(argv)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
