"""Helpers shared by every level: RASP values (identity, order, syntax) and names."""
