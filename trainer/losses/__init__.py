"""Loss terms (each takes logits and Targets, computes in float32, ignores label 2)."""

from .boundary import BoundaryLoss
from .cldice import ClDiceLoss, soft_skeleton
from .compound import (
    LOSS_TERMS,
    CompoundLoss,
    LossOutput,
    LossSettings,
    LossTerm,
    LossWeights,
    build_loss,
)
from .connectivity import ConnectivityLoss
from .dice import DiceLoss
from .focal import FocalLoss
from .skeleton_recall import SkeletonRecallLoss, skeleton_tube
from .targets import Targets, TermValue, make_targets

__all__ = ["BoundaryLoss", "ClDiceLoss", "CompoundLoss", "ConnectivityLoss", "DiceLoss",
           "FocalLoss", "LOSS_TERMS", "LossOutput", "LossSettings", "LossTerm", "LossWeights",
           "SkeletonRecallLoss", "Targets", "TermValue", "build_loss", "make_targets",
           "skeleton_tube", "soft_skeleton"]
