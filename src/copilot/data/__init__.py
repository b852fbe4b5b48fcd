"""Recorded conversations: the format and its validation (records), importers, the seeded split, the context a
strategy sees, and the per-turn predictions table.

Kept free of imports: the server imports :mod:`copilot.data.context` and must not pay for pandas.
"""
