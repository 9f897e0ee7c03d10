"""Scorers: one difficulty value per pool sample (or none). One file per family."""
