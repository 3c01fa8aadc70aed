"""Contacts as Genesys needs them: mapping registry, normalization, business keys, diff.

No Dagster imports here: this is plain, testable logic.
"""
