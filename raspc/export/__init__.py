"""Exports of compiled models to other toolkits (`transformer_lens`: TransformerLens 4.x and 3.x)."""
