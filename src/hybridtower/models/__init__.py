"""Model library: PIG and the Two-Tower / Single-Tower baselines behind one interface (see ``base``).

Models know nothing about files: ``hybridtower.hub`` builds them from presets, CLIP weights and checkpoints.
"""

from .base import ModelOutput, RetrievalModel
from .config import FRAMEWORKS, SIZES, ModelConfig, config_from_dict, list_presets, preset_config
from .pig import PIG
from .two_tower import ClipVip, MeanPooling
from .xpool import XPool

FRAMEWORK_CLASSES = {"pig": PIG, "meanp": MeanPooling, "clipvip": ClipVip, "xpool": XPool}

__all__ = [
    "FRAMEWORKS", "FRAMEWORK_CLASSES", "SIZES", "ModelConfig", "ModelOutput", "RetrievalModel", "PIG",
    "MeanPooling", "ClipVip", "XPool", "config_from_dict", "list_presets", "preset_config",
]
