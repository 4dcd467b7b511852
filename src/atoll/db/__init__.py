"""Databases: the API DB, one DB per cell, and their migrations."""
