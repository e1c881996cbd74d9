"""Distillation methods. Importing this package registers every method in ``METHODS``."""
from segkd.distill.base import METHODS, DistillMethod, build_method, register_method
from segkd.distill.hooks import FeatureTaps

# Each import registers its method(s). Teacher → student:
from segkd.distill import cirkd, cwd, dist, feature_kd, ifvd, logits_kd, skd  # noqa: E402,F401
# Self-distillation (binary object segmentation):
from segkd.distill import byot, dhm, dks, frskd, pspsd, sad, tfkd  # noqa: E402,F401

__all__ = ["METHODS", "DistillMethod", "FeatureTaps", "build_method", "register_method"]
