"""Distillation methods. Importing this package registers every method in ``METHODS``."""
# Each import registers its method(s). Teacher → student:
# Self-distillation (binary object segmentation):
from segkd.distill import afdcd, byot, cirkd, cwd, dhm, dist, dks, feature_kd, frskd, ifvd, logits_kd, pspsd, sad, skd, tfkd  # noqa: E402,F401  # noqa: E402,F401
from segkd.distill.base import METHODS, DistillMethod, build_method, register_method
from segkd.distill.hooks import FeatureTaps

__all__ = ["METHODS", "DistillMethod", "FeatureTaps", "build_method", "register_method"]
