"""Shared primitives at the bottom of the import graph: every app may import ``core``,
``core`` imports no app (JOSE, RFC 6749 errors, console roles).
"""
