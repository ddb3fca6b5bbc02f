"""Ledger conformance tests: memory, SQLite and PostgreSQL backends."""
