"""Model library: PIG and the Two-Tower / Single-Tower baselines behind one interface (see ``base``), and a
Two-Tower meanP over any open_clip model used whole (``open_clip_tower``). Their CLIP towers are
hybridtower's own (``clip_backbone``: the layout of open_clip's ``CLIP``, built without importing open_clip)
for the ViT architectures those implement, and open_clip's modules for the others (ResNets).

Models know nothing about files: ``hybridtower.hub`` builds them from presets, CLIP weights and checkpoints.
"""

from .base import ModelOutput, RetrievalModel
from .config import FRAMEWORKS, SIZES, ModelConfig, config_from_dict, list_presets, preset_config
from .open_clip_tower import OpenClipMeanPooling, OpenClipTokenizer
from .pig import PIG
from .two_tower import ClipVip, MeanPooling
from .xpool import XPool

FRAMEWORK_CLASSES = {"pig": PIG, "meanp": MeanPooling, "clipvip": ClipVip, "xpool": XPool,
                     "openclip": OpenClipMeanPooling}

__all__ = [
    "FRAMEWORKS", "FRAMEWORK_CLASSES", "SIZES", "ModelConfig", "ModelOutput", "RetrievalModel", "PIG",
    "MeanPooling", "ClipVip", "XPool", "OpenClipMeanPooling", "OpenClipTokenizer", "config_from_dict", "list_presets",
    "preset_config",
]
