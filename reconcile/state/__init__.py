"""Recorded state: the model, its stores (file, PostgreSQL), journal, lock and audit log."""
