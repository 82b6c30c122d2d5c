"""Shared primitives at the bottom of the import graph: every app may import ``core``,
``core`` imports no app (JOSE, RFC 6749 errors, the client address behind trusted
proxies, console roles and the role-gated admin mixin). A test walks its imports.
"""
