"""Holding messages for offline friends (PROTOCOL.md §14)."""
