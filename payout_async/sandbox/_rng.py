"""Seeded random generators, one per purpose so that one stream never shifts another."""

from __future__ import annotations

import random

__all__ = ["seeded_random"]


def seeded_random(seed: int | None, purpose: str) -> random.Random:
    """A generator for ``purpose``: reproducible for a given ``seed``, random for ``None``."""
    return random.Random(None if seed is None else f"{purpose}:{seed}")
