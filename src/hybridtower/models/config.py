"""Typed model configuration and the named presets ``{framework}-{size}``.

Frameworks:
    ``pig``      Hybrid-Tower PIG: pseudo-query generation + pseudo-interaction fusion (query-independent).
    ``meanp``    Two-Tower CLIP4Clip meanP: mean of per-frame CLIP image features.
    ``clipvip``  Two-Tower CLIP-ViP: the video-CLS output of the video-proxy encoder.
    ``xpool``    Single-Tower X-Pool: the real text query attends over per-frame CLIP features (re-rank only).
    ``openclip`` Two-Tower meanP through open_clip's own model (``encode_image`` / ``encode_text`` and its
                 tokenizer): ``clip:ARCH`` for the open_clip architectures whose towers hybridtower's own
                 modules cannot take (timm or Hugging Face towers, SigLIP, CoCa, other tokenizers). No preset.

Variant: ``pig-m4-{size}`` is PIG-M (a step past the paper, opt-in): ``num_pseudo_queries = 4`` pseudo-queries
per video, one per temporal segment, each fused into its own stored vector; a query scores a video by
the max over its vectors (docs/method-decisions.md, "PIG-M").

Sizes: ``vit-b-32`` and ``vit-b-16`` (the paper's backbones, open_clip architectures ``ViT-B-32`` /
``ViT-B-16`` with QuickGELU as in OpenAI's weights) and ``tiny`` (a 3-layer open_clip architecture shipped
with this package as ``hybridtower-tiny``, for tests and CPU demos).

Where the paper is ambiguous the defaults follow ``docs/method-decisions.md`` (method.md section 6).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..core.config import apply_overrides, from_dict
from ..core.errors import ConfigError

FRAMEWORKS = ("pig", "meanp", "clipvip", "xpool", "openclip")
PRESET_FRAMEWORKS = ("pig", "meanp", "clipvip", "xpool")  # the ones with ``{framework}-{size}`` presets
EVAL_SAMPLINGS = ("auto", "middle", "linspace")
# what "auto" means per framework: each framework's own release (docs/method-decisions.md)
_EVAL_SAMPLING_AUTO = {"pig": "linspace", "clipvip": "linspace", "meanp": "middle", "xpool": "middle",
                       "openclip": "middle"}
SIZES = ("vit-b-32", "vit-b-16", "tiny")


@dataclass
class BackboneConfig:
    arch: str = "ViT-B-32"  # open_clip architecture name (built-in, or ``hybridtower-tiny``)
    quick_gelu: bool = True  # OpenAI CLIP weights were trained with QuickGELU
    # framework "openclip" only: the open_clip model config the model is built from (recorded so that a
    # checkpoint rebuilds the same model wherever ``arch`` is unknown or differs) and the frame
    # preprocessing its weights expect (image_size, mean, std, resize_mode, interpolation); empty = none
    open_clip: dict = field(default_factory=dict)
    preprocess: dict = field(default_factory=dict)


@dataclass
class VideoConfig:
    num_frames: int = 12  # frames sampled per video (T)
    num_proxies: int = 3  # CLIP-ViP video proxy tokens added beside the video CLS (M = 1 + num_proxies)
    frame_cls: bool = True  # one shared frame-CLS token per frame (+ temporal embedding), PIG's addition
    temporal_embedding: bool = True  # learnable, zero-initialised, interpolated when T differs
    proxy_init: str = "randn"  # "randn" (official release: N(0,1)) or "class" (copy of CLIP's class embedding)
    # frames read at evaluation / indexing: "linspace" = linspace(0, n-1, T) (the PIG / CLIP-ViP release's
    # test sampler, the grid its train jitter is built on); "middle" = each segment's middle frame
    # (CLIP4Clip / X-Pool); "auto" = linspace for pig and clipvip, middle for meanp and xpool
    eval_sampling: str = "auto"


@dataclass
class ITSConfig:
    k: int = 16  # number of informative patch tokens; 0 = none, -1 = every patch
    layer: int = -1  # vision layer whose video-CLS attention scores the patches (-1 = last)
    head_reduction: str = "max"  # "max" or "mean" over attention heads


@dataclass
class GeneratorConfig:
    mapper: str = "linear"  # "linear" or "mlp" (Linear-GELU-Linear) from joint space to text width
    use_bos: bool = True  # prepend [BOS] (release, fpig B/16); False = fpig B/32
    learnable_bos_eos: bool = True  # figure + fpig: learnable; release: frozen constants
    text_projection: bool = True  # apply a copy of CLIP's text projection to the EOS output (fpig)
    use_frame_tokens: bool = True  # feed x_f (frame CLS outputs) to the generator
    use_global_tokens: bool = True  # feed x_v (video CLS + proxies) to the generator


@dataclass
class FusionConfig:
    num_heads: int = 1  # X-Pool: one head, head dim = embed dim
    dropout: float = 0.1  # PIG release: 0.1; the xpool presets set X-Pool's own 0.3 (its MSRVTT-9k recipe)
    temperature: float = 1.0  # attention temperature (1 = plain scaled dot product)
    # PIG only: False = "PIG without fusion", the pseudo-query t_p itself is the video vector (an ablation)
    enabled: bool = True
    # PIG only, the fusion's keys/values: "all" = [x_v; x_f] (video CLS + proxies + frame CLS, the release),
    # "frames" = frame CLS only, "global" = video CLS + proxies only (ablations)
    keys: str = "all"


@dataclass
class ModelConfig:
    framework: str = "pig"
    name: str = ""  # preset name this config came from, if any
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    its: ITSConfig = field(default_factory=ITSConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    # PIG-M (opt-in, past the paper): M pseudo-queries per video, one per temporal segment of the frames,
    # each fused against every frame token -> M stored vectors; score = max over them. 1 = the paper's PIG
    num_pseudo_queries: int = 1
    text_context_length: int = 50  # tokens per caption (padded / truncated)
    logit_scale_init: float = 4.6052  # ln(100), as in CLIP / the release
    logit_scale_max: float = 5.2983  # clamp at ln(200)

    # fields added after indexes were first built, with the value that reproduces the old behaviour: left out
    # of ``core.config.config_hash`` while they hold it, so existing indexes keep matching their checkpoints
    HASH_NEUTRAL = {"fusion.enabled": True, "fusion.keys": "all", "backbone.open_clip": {}, "backbone.preprocess": {}}

    def validate(self) -> "ModelConfig":
        if self.framework not in FRAMEWORKS:
            raise ConfigError(f"unknown framework {self.framework!r}; choose one of {FRAMEWORKS}")
        if self.video.num_frames < 1:
            raise ConfigError("video.num_frames must be >= 1")
        if self.its.head_reduction not in ("max", "mean"):
            raise ConfigError("its.head_reduction must be 'max' or 'mean'")
        if self.generator.mapper not in ("linear", "mlp"):
            raise ConfigError("generator.mapper must be 'linear' or 'mlp'")
        if self.video.proxy_init not in ("randn", "class"):
            raise ConfigError("video.proxy_init must be 'randn' or 'class'")
        if self.num_pseudo_queries < 1:
            raise ConfigError(f"num_pseudo_queries must be >= 1, got {self.num_pseudo_queries}")
        if self.num_pseudo_queries > 1 and self.framework != "pig":
            raise ConfigError(f"num_pseudo_queries > 1 needs the pig framework (a pseudo-query generator), "
                              f"not {self.framework}")
        if self.num_pseudo_queries > self.video.num_frames:
            raise ConfigError(f"num_pseudo_queries {self.num_pseudo_queries} exceeds video.num_frames "
                              f"{self.video.num_frames}: each pseudo-query needs its own segment of frames")
        if self.video.eval_sampling not in EVAL_SAMPLINGS:
            raise ConfigError(f"video.eval_sampling must be one of {EVAL_SAMPLINGS}, got {self.video.eval_sampling!r}")
        if self.fusion.keys not in ("all", "frames", "global"):
            raise ConfigError(f"fusion.keys must be 'all', 'frames' or 'global', got {self.fusion.keys!r}")
        if self.fusion.num_heads < 1:
            raise ConfigError("fusion.num_heads must be >= 1")
        if self.framework == "openclip" and not self.backbone.open_clip:
            raise ConfigError("framework 'openclip' needs backbone.open_clip (the open_clip model config): "
                              "build it with hybridtower.create_model('clip:ARCH')")
        return self

    def resolved_eval_sampling(self, override: str | None = None) -> str:
        """``"middle"`` or ``"linspace"``: ``override`` (when given and not ``auto``), else this config's
        ``video.eval_sampling``, where ``auto`` follows the framework's own release."""
        choice = override if override not in (None, "", "auto") else self.video.eval_sampling
        if choice not in EVAL_SAMPLINGS:
            raise ConfigError(f"eval sampling must be one of {EVAL_SAMPLINGS}, got {choice!r}")
        return _EVAL_SAMPLING_AUTO[self.framework] if choice == "auto" else choice

    @property
    def uses_vip_encoder(self) -> bool:
        return self.framework in ("pig", "clipvip")


_SIZE_DEFAULTS = {
    "vit-b-32": dict(backbone=dict(arch="ViT-B-32"), video=dict(num_frames=12), its=dict(k=16)),
    "vit-b-16": dict(backbone=dict(arch="ViT-B-16"), video=dict(num_frames=12), its=dict(k=16)),
    "tiny": dict(backbone=dict(arch="hybridtower-tiny"), video=dict(num_frames=8), its=dict(k=8), text_context_length=32),
}


# per-framework values on top of the dataclass defaults: each framework keeps its own release's numbers
_FRAMEWORK_DEFAULTS = {
    "xpool": dict(fusion=dict(dropout=0.3)),  # X-Pool README, MSR-VTT-9k: --transformer_dropout=0.3
}


# named variants of a framework: "{variant}-{size}" = the framework's preset plus these values
VARIANTS = {
    "pig-m4": ("pig", dict(num_pseudo_queries=4)),  # PIG-M, 4 segment pseudo-queries (opt-in)
    "pig-nofusion": ("pig", dict(fusion=dict(enabled=False))),  # ablation: t_p itself is the video vector
}


def list_presets() -> list[str]:
    return [f"{fw}-{size}" for fw in PRESET_FRAMEWORKS for size in SIZES] + [f"{v}-{size}" for v in VARIANTS for size in SIZES]


def _parse_preset(name: str) -> tuple[str, str, dict]:
    for variant, (framework, values) in VARIANTS.items():
        if name.startswith(variant + "-"):
            return framework, name[len(variant) + 1 :], values
    framework, _, size = name.partition("-")
    return framework, size, {}


def preset_config(name: str, overrides: list[str] | None = None) -> ModelConfig:
    """The config of preset ``name`` (e.g. ``pig-vit-b-32``), with ``key=value`` overrides applied."""
    framework, size, variant = _parse_preset(name)
    if framework not in PRESET_FRAMEWORKS or size not in _SIZE_DEFAULTS:
        raise ConfigError(f"unknown model preset {name!r}; available: {', '.join(list_presets())}")
    data = {"framework": framework, "name": name, **_SIZE_DEFAULTS[size], **_FRAMEWORK_DEFAULTS.get(framework, {}),
            **variant}
    cfg = from_dict(ModelConfig, data, where=f"preset {name}")
    return apply_overrides(cfg, overrides).validate()


def config_from_dict(data: dict) -> ModelConfig:
    return from_dict(ModelConfig, data, where="model config").validate()


def replace(cfg: ModelConfig, **changes) -> ModelConfig:
    return dataclasses.replace(cfg, **changes)
