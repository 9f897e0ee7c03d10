"""distillkit: a config-driven experiment CLI for dataset distillation."""

__version__ = "0.1.0"
