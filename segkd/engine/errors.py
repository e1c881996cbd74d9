"""Why training stopped: the errors the training loop raises for a user to act on."""
from __future__ import annotations


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped before saving anything from that step."""


class DivergedWeightsError(NonFiniteLossError):
    """The weights are no longer finite (or have exploded); the checkpoint was not written."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says where it stopped and how to continue."""
