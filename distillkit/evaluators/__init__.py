"""Evaluators: measure a distilled set. One file per family."""
