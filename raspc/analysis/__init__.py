"""Analyses over the IR: value sets (`value_sets`), selector facts (`selectors`), circuits (`circuits`)."""
