"""Distillation methods. Importing this package registers every method in ``METHODS``."""
# Each import registers its method(s): teacher → student, then self-distillation (binary object
# segmentation), then the named full recipes built from them.
from segkd.distill import (  # noqa: F401
    afdcd,
    byot,
    cirkd,
    cwd,
    dhm,
    dist,
    dks,
    feature_kd,
    frskd,
    ifvd,
    logits_kd,
    pspsd,
    recipes,
    sad,
    skd,
    tfkd,
)
from segkd.distill.base import METHODS, DistillMethod, build_method, register_method
from segkd.distill.hooks import FeatureTaps

__all__ = ["METHODS", "DistillMethod", "FeatureTaps", "build_method", "register_method"]
