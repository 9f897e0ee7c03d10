"""Generators: make the pool of candidates (or the final synthetic set). One file per family."""
