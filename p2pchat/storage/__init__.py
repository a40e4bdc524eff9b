"""Durable storage: one SQLite database per identity.

Owns the database worker thread with group commit (:mod:`.database`), encryption at rest
(:mod:`.encryption`, SQLCipher), the schema and its migrations (:mod:`.schema`) and the small
key/value settings table (:mod:`.settings`). Each
concern keeps the queries of its own tables next to its code (``p2pchat.chat.store``,
``p2pchat.files.store``), all run through :class:`.database.Database`.

May import: nothing of p2pchat but the standard library, trio and sqlcipher3.
"""
