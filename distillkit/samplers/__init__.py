"""Samplers: choose IPC samples per class from the pool. One file per family."""
