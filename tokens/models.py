"""Signing keys and token records (see the tokens issue)."""
