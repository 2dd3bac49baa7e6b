"""Canonicalization patterns of raspc's dialects, one module per dialect (as in
`xdsl/transforms/canonicalization_patterns/`). Ops import them lazily from their traits, so
xDSL's own `canonicalize` pass runs them."""
