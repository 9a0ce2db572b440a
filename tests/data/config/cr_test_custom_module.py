"""Imported by custom_imports_ok.py; records that it was imported."""
IMPORTED = True
