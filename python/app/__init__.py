"""Compatibility package: the import paths of the original assistant."""
