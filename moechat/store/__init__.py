"""Persistent chats in SQLite: the only package that imports sqlite3."""
