"""intlm: integer-only byte-level language models trained by EGGROLL evolution strategies."""

__version__ = "0.1.0"
