"""The model card now lives in `experiment.model.card`; this module keeps the old import path working.

Why keep it: the launch commands import the card from here; new code imports `experiment.model.card` (and the file
hash from `experiment.model.digest`) directly.
"""

from __future__ import annotations

from experiment.model.card import (
    MODEL_CARD_NAME,
    ModelCard,
    ParityResult,
    load_model_card,
    load_verified_model_card,
)
from experiment.model.digest import sha256_file

__all__ = [
    "MODEL_CARD_NAME",
    "ModelCard",
    "ParityResult",
    "load_model_card",
    "load_verified_model_card",
    "sha256_file",
]
