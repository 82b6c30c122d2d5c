#!/usr/bin/env python3
"""Verify a Machine Identity Portal audit export offline: needs Python 3.11+ and cryptography.

    python3 verify_audit_export.py EXPORT [--manifest EXPORT.manifest.json] [--jwks audit-keys.json]
                                          [--witness WITNESS.jsonl ...]

Exit 0 when the file matches its signed manifest and every line chains; 1 naming the
first altered, missing or reordered line (or the witnessed checkpoint it contradicts);
2 when it cannot be read. The rules live in
``audit/chain.py`` (standard library + cryptography only), loaded here by path so the
portal and this script share one implementation. Copy both files together, keeping
``audit/chain.py`` beside this script's parent, or pass --chain PATH.
"""

import importlib.util
import sys
from pathlib import Path


def load_chain(path: Path):
    spec = importlib.util.spec_from_file_location("audit_chain", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while loading
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    argv = sys.argv[1:]
    chain_path = Path(__file__).resolve().parent.parent / "audit" / "chain.py"
    if "--chain" in argv:
        index = argv.index("--chain")
        chain_path = Path(argv[index + 1])
        del argv[index : index + 2]
    sys.exit(load_chain(chain_path).main(argv))
