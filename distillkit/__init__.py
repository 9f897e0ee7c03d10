"""distillkit: a config-driven experiment CLI for dataset distillation."""

from distillkit import malloc  # noqa: F401  (sets glibc's malloc up before the first large tensor: malloc.py)

__version__ = "0.1.0"
