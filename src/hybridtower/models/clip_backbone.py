"""hybridtower's own CLIP towers: a ViT image tower and CLIP's causal text transformer.

They stand in for open_clip's ``CLIP`` model wherever hybridtower uses one (PIG, CLIP-ViP, X-Pool and meanP
take it apart module by module), so that a model can be built, and a checkpoint loaded, without importing
the ``open_clip`` package (whose ``__init__`` pulls in torchvision, torch._dynamo, sympy and timm: most of a
CLI ``search``'s start-up). They are built from an open_clip model config (the dict of an open_clip
``model_configs/ARCH.json``: ``embed_dim``, ``quick_gelu``, ``vision_cfg``, ``text_cfg``) and have the
same attribute names, state-dict keys (in the same order), shapes and arithmetic as open_clip's ``CLIP``
for the configs :func:`unsupported` accepts: a ViT with a CLS token, learnable positional embedding,
pre- and post-LayerNorm and a projection matrix; CLIP's text transformer read at the EOT token; optional
LayerScale, any MLP ratio, QuickGELU or GELU. Anything else (ResNet, timm or Hugging Face towers,
attentional pooling, other pool types, patch dropout, custom blocks, ...) is named by :func:`unsupported`,
and ``hybridtower.hub`` then keeps open_clip's own model.

Weights: ``hub`` lets open_clip build and initialise (or load) its model as before, then a
:class:`ClipBackbone` built on the meta device adopts those very tensors (:func:`adopt_open_clip`), so
random-number streams, and therefore training runs, do not change. An empty model (every tensor on the
meta device, to be filled from a checkpoint) is built here directly. This module reads no files.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

# CLIP's image normalisation (the OpenAI release's; open_clip's default for every architecture)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# the open_clip config keys these towers implement, and their open_clip defaults
_VISION_DEFAULTS = {"layers": 12, "width": 768, "head_width": 64, "mlp_ratio": 4.0, "patch_size": 16,
                    "image_size": 224, "ls_init_value": None}
_TEXT_DEFAULTS = {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12,
                  "mlp_ratio": 4.0, "ls_init_value": None}
# keys accepted only at these values (open_clip's defaults, under which they change nothing)
_VISION_NEUTRAL = {"patch_dropout": (0, 0.0), "attentional_pool": (False,), "no_ln_pre": (False,),
                   "pos_embed_type": ("learnable",), "final_ln_after_pool": (False,), "pool_type": ("tok",),
                   "output_tokens": (False,), "act_kwargs": (None,), "norm_kwargs": (None, {}),
                   "block_type": (None, "default"), "qk_norm": (False,), "scaled_cosine_attn": (False,),
                   "scale_heads": (False,), "scale_attn_inner": (False,), "scale_attn": (False,),
                   "scale_fc": (False,), "attn_pooler_queries": None, "attn_pooler_heads": None}
_TEXT_NEUTRAL = {"embed_cls": (False,), "pad_id": (0,), "no_causal_mask": (False,), "final_ln_after_pool": (False,),
                 "pool_type": ("argmax",), "proj_bias": (False,), "proj_type": ("linear",), "output_tokens": (False,),
                 "act_kwargs": (None,), "norm_kwargs": (None, {}), "block_type": (None, "default"),
                 "qk_norm": (False,), "scaled_cosine_attn": (False,), "scale_heads": (False,),
                 "scale_attn_inner": (False,), "scale_attn": (False,), "scale_fc": (False,),
                 "hf_tokenizer_name": (None,), "tokenizer_mode": (None,), "tokenizer_kwargs": (None,),
                 "eos_id": None}  # eos_id only matters for pool_type "eos"
_TOP_NEUTRAL = {"custom_text": (False,), "nonscalar_logit_scale": (False,), "init_logit_bias": (None,),
                "quick_gelu": None}


def _odd_keys(cfg: dict, implemented: dict, neutral: dict, where: str) -> list[str]:
    out = []
    for key, value in cfg.items():
        if key in implemented:
            continue
        if key not in neutral:
            out.append(f"{where}{key}")
        elif neutral[key] is not None and not any(value == v and type(value) is type(v) for v in neutral[key]):
            out.append(f"{where}{key}={value!r}")
    return out


def unsupported(model_cfg: dict) -> str | None:
    """Why these towers cannot be built for an open_clip model config (then open_clip's model is used), or
    None when they reproduce open_clip's ``CLIP`` for it exactly."""
    if not isinstance(model_cfg, dict):
        return "no open_clip model config"
    vision, text = model_cfg.get("vision_cfg"), model_cfg.get("text_cfg")
    if not isinstance(vision, dict) or not isinstance(text, dict) or not model_cfg.get("embed_dim"):
        return "the config lacks embed_dim, vision_cfg or text_cfg"
    problems = []
    if "timm_model_name" in vision:
        problems.append("its image tower is a timm model")
    if isinstance(vision.get("layers"), (list, tuple)):
        problems.append("its image tower is a ResNet")
    if "hf_model_name" in text:
        problems.append("its text tower is a Hugging Face model")
    if "multimodal_cfg" in model_cfg:
        problems.append("it has a multimodal decoder (CoCa)")
    if problems:
        return "; ".join(problems)
    timm_keys = {k: None for k in vision if k.startswith("timm_")}  # ignored by open_clip without a timm model
    odd = (_odd_keys({k: v for k, v in model_cfg.items() if k not in ("embed_dim", "vision_cfg", "text_cfg")},
                     {}, _TOP_NEUTRAL, "")
           + _odd_keys(vision, _VISION_DEFAULTS, {**_VISION_NEUTRAL, **timm_keys}, "vision_cfg.")
           + _odd_keys(text, _TEXT_DEFAULTS, _TEXT_NEUTRAL, "text_cfg."))
    if odd:
        return "hybridtower's CLIP towers do not implement " + ", ".join(odd)
    v = {**_VISION_DEFAULTS, **vision}
    if not isinstance(v["layers"], int) or v["width"] % v["head_width"]:
        return "vision_cfg: width must be a multiple of head_width and layers an int"
    t = {**_TEXT_DEFAULTS, **text}
    if t["width"] % t["heads"]:
        return "text_cfg: width must be a multiple of heads"
    return None


def _pair(x) -> tuple[int, int]:
    return (int(x[0]), int(x[1])) if isinstance(x, (tuple, list)) else (int(x), int(x))


class LayerNorm(nn.LayerNorm):
    """LayerNorm whose output has the input's dtype (the result of an fp32 norm under autocast is cast back)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    """The sigmoid approximation of GELU that OpenAI's CLIP weights were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class LayerScale(nn.Module):
    """Per-channel learnable scale of a residual branch (CaiT), parameter ``gamma``."""

    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: ``x + ls_1(attn(ln_1(x)))``, then ``+ ls_2(mlp(ln_2(x)))``; batch first."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, ls_init_value: float | None, quick_gelu: bool):
        super().__init__()
        self.ln_1 = LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ls_1 = LayerScale(width, ls_init_value) if ls_init_value is not None else nn.Identity()
        self.ln_2 = LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(width, hidden), gelu=QuickGELU() if quick_gelu else nn.GELU(),
                                             c_proj=nn.Linear(hidden, width)))
        self.ls_2 = LayerScale(width, ls_init_value) if ls_init_value is not None else nn.Identity()

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.ln_1(x)
        mask = None if attn_mask is None else attn_mask.to(y.dtype)
        x = x + self.ls_1(self.attn(y, y, y, need_weights=False, attn_mask=mask)[0])
        return x + self.ls_2(self.mlp(self.ln_2(x)))


class Transformer(nn.Module):
    """A stack of residual attention blocks over [B, L, width] (optionally checkpointed block by block)."""

    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float, ls_init_value: float | None,
                 quick_gelu: bool):
        super().__init__()
        self.width = width
        self.layers = layers
        self.batch_first = True
        self.grad_checkpointing = False
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, mlp_ratio, ls_init_value, quick_gelu)
                                       for _ in range(layers))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            if self.grad_checkpointing:
                x = checkpoint(block, x, attn_mask, use_reentrant=False)
            else:
                x = block(x, attn_mask=attn_mask)
        return x


class VisionTransformer(nn.Module):
    """CLIP's image ViT: patchify (conv, no bias), prepend the class embedding, add positional embeddings,
    ln_pre, blocks, ln_post, class token times ``proj`` -> [B, output_dim]."""

    def __init__(self, image_size, patch_size, width: int, layers: int, heads: int, mlp_ratio: float,
                 ls_init_value: float | None, output_dim: int, quick_gelu: bool):
        super().__init__()
        self.image_size = _pair(image_size)
        self.patch_size = _pair(patch_size)
        self.grid_size = (self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1])
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(3, width, kernel_size=self.patch_size, stride=self.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(width))
        self.positional_embedding = nn.Parameter(torch.empty(self.grid_size[0] * self.grid_size[1] + 1, width))
        self.patch_dropout = nn.Identity()
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, mlp_ratio, ls_init_value, quick_gelu)
        self.attn_pool = None
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(torch.empty(width, output_dim))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.transformer.grad_checkpointing = enable

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.conv1(images)  # [B, width, gh, gw]
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # [B, P, width]
        cls = self.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x)[:, 0] @ self.proj


class ClipBackbone(nn.Module):
    """Both CLIP towers, laid out like open_clip's ``CLIP``: ``visual`` and the text parts ``token_embedding``,
    ``positional_embedding``, ``transformer``, ``ln_final``, ``text_projection``, plus ``logit_scale``."""

    def __init__(self, model_cfg: dict, quick_gelu: bool = False):
        super().__init__()
        problem = unsupported(model_cfg)
        if problem:
            raise ValueError(f"ClipBackbone cannot be built for this config: {problem}")
        quick = bool(quick_gelu or model_cfg.get("quick_gelu", False))
        embed_dim = int(model_cfg["embed_dim"])
        v = {**_VISION_DEFAULTS, **model_cfg["vision_cfg"]}
        t = {**_TEXT_DEFAULTS, **model_cfg["text_cfg"]}
        self.model_cfg = model_cfg
        self.quick_gelu = quick
        # registration order as in open_clip's CLIP, so state-dict keys come in the same order
        self.visual = VisionTransformer(v["image_size"], v["patch_size"], int(v["width"]), int(v["layers"]),
                                        int(v["width"]) // int(v["head_width"]), float(v["mlp_ratio"]),
                                        v["ls_init_value"], embed_dim, quick)
        width = int(t["width"])
        self.transformer = Transformer(width, int(t["layers"]), int(t["heads"]), float(t["mlp_ratio"]),
                                       t["ls_init_value"], quick)
        self.context_length = int(t["context_length"])
        self.vocab_size = int(t["vocab_size"])
        # given its weight, nn.Embedding skips its random init (normal_ on the meta device imports torch._dynamo)
        self.token_embedding = nn.Embedding(self.vocab_size, width, _weight=torch.empty(self.vocab_size, width))
        self.positional_embedding = nn.Parameter(torch.empty(self.context_length, width))
        self.ln_final = LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        self.logit_scale = nn.Parameter(torch.full((), math.log(1 / 0.07)))
        if not self.logit_scale.is_meta:
            self.init_parameters()

    @torch.no_grad()
    def init_parameters(self) -> None:
        """A CLIP-style random init for a module used on its own (``hub`` never relies on it: new models take
        open_clip's initialised tensors, loaded ones the checkpoint's)."""
        vis, width = self.visual, self.visual.class_embedding.shape[0]
        nn.init.normal_(vis.class_embedding, std=width ** -0.5)
        nn.init.normal_(vis.positional_embedding, std=width ** -0.5)
        nn.init.normal_(vis.proj, std=width ** -0.5)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        tw, n = self.transformer.width, len(self.transformer.resblocks)
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=tw ** -0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=tw ** -0.5 * (2 * n) ** -0.5)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * tw) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=tw ** -0.5 * (2 * n) ** -0.5)
        nn.init.normal_(self.text_projection, std=tw ** -0.5)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual.set_grad_checkpointing(enable)
        self.transformer.grad_checkpointing = enable

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        x = self.visual(images)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """tokens [B, L] (L <= context_length) -> features [B, embed_dim], read at the EOT (highest) token."""
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length].to(self.token_embedding.weight.dtype)
        mask = torch.full((length, length), float("-inf"), device=x.device, dtype=x.dtype).triu_(1)
        x = self.ln_final(self.transformer(x, attn_mask=mask))
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)] @ self.text_projection
        return F.normalize(x, dim=-1) if normalize else x


def build_backbone(model_cfg: dict, quick_gelu: bool = False, device: str | torch.device | None = None) -> ClipBackbone:
    """``ClipBackbone(model_cfg)``, on ``device`` (``"meta"``: shapes only, no memory, no random init)."""
    if device is None:
        return ClipBackbone(model_cfg, quick_gelu)
    with torch.device(device):
        return ClipBackbone(model_cfg, quick_gelu)


def structure(module: nn.Module) -> dict:
    """What a state dict does not show but the arithmetic depends on, per submodule name: attention heads,
    activation, LayerNorm eps, patch geometry, the tower sizes."""
    out = {}
    for name, m in module.named_modules():
        if isinstance(m, nn.MultiheadAttention):
            out[name] = ("attn", m.num_heads, m.batch_first, m.dropout)
        elif isinstance(m, nn.LayerNorm):
            out[name] = ("ln", tuple(m.normalized_shape), m.eps, m.elementwise_affine)
        elif isinstance(m, nn.GELU):
            out[name] = ("gelu", m.approximate)
        elif type(m).__name__ == "QuickGELU":
            out[name] = ("quickgelu",)
        elif isinstance(m, nn.Conv2d):
            out[name] = ("conv", m.kernel_size, m.stride, m.padding, m.dilation, m.groups)
        elif type(m).__name__ in ("VisionTransformer",):
            out[name] = ("vit", tuple(_pair(m.image_size)), tuple(_pair(m.patch_size)), int(m.output_dim),
                         getattr(m, "attn_pool", None) is None, getattr(m, "pool_type", "tok"),
                         bool(getattr(m, "final_ln_after_pool", False)), bool(getattr(m, "output_tokens", False)))
        elif isinstance(m, (nn.Dropout, LayerScale)) or type(m).__name__ in ("PatchDropout", "LayerScale"):
            out[name] = (type(m).__name__, getattr(m, "p", None), getattr(m, "prob", None),
                         getattr(m, "inplace", False))
    return out


def adopt_open_clip(clip: nn.Module, model_cfg: dict, quick_gelu: bool = False) -> ClipBackbone:
    """A :class:`ClipBackbone` holding ``clip``'s own tensors (open_clip's ``CLIP`` built from ``model_cfg``):
    built on the meta device, then every parameter assigned (strict: same keys and shapes), so nothing is
    copied or re-initialised. ``clip.visual.preprocess_cfg`` is kept. Raises ValueError when ``clip`` does
    not have these towers' structure."""
    own = build_backbone(model_cfg, quick_gelu, device="meta")
    mine, theirs = structure(own), structure(clip)
    differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    if differ:
        raise ValueError(f"open_clip's model differs from hybridtower's CLIP towers at {differ[:5]}")
    state = clip.state_dict(keep_vars=True)
    if list(state) != list(own.state_dict()):
        raise ValueError("open_clip's model has other tensors than hybridtower's CLIP towers")
    own.load_state_dict(state, strict=True, assign=True)
    own.train(clip.training)
    pre = getattr(clip.visual, "preprocess_cfg", None)
    if pre is not None:
        own.visual.preprocess_cfg = dict(pre)
    return own
