"""Moderating many files: folder scans and the writers of their rows."""
