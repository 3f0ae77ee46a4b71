"""open_clip towers for galaxalign: presets, weight loading and the tri-modal model."""

from __future__ import annotations

import copy
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from galaxalign.schema import ClassSchema

logger = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
open_clip.add_model_config(MODEL_CONFIG_DIR)

# Short names a user may type, mapped to open_clip model names and default weights.
# "small" is random-initialised on purpose: it exists to train on a CPU.
PRESETS: dict[str, tuple[str, str | None]] = {
    "small": ("galaxalign-small", None),
    "vit-b-16": ("ViT-B-16", "openai"),
    "convnext": ("convnext_base_w", "laion2b_s13b_b82k"),
}

_NO_WEIGHTS = {None, "", "none", "random"}


class WeightsNotFoundError(FileNotFoundError):
    """Raised when pre-trained weights can be neither downloaded nor read from a local file."""


@dataclass(frozen=True)
class ImageNormalization:
    """Per-channel mean and standard deviation of RGB pixels scaled to [0, 1]."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def resolve_model_name(model: str) -> tuple[str, str | None]:
    """Return the open_clip model name and its default weights tag for a preset or open_clip name."""
    if model in PRESETS:
        return PRESETS[model]
    if model not in open_clip.list_models():
        raise ValueError(
            f"unknown model {model!r}: use a preset ({', '.join(PRESETS)}) or an open_clip model "
            "name such as 'ViT-B-16' or 'convnext_base_w' (open_clip.list_models() lists them)"
        )
    return model, None


def _needs_quick_gelu(model_name: str, pretrained: str | None) -> bool:
    if pretrained is None or os.path.isfile(pretrained):
        return False
    return bool(open_clip.get_pretrained_cfg(model_name, pretrained).get("quick_gelu", False))


def _weights_hint(model_name: str, pretrained: str) -> str:
    """Say which file to fetch by hand for a weights tag, preferring the Hugging Face copy open_clip uses."""
    config = open_clip.get_pretrained_cfg(model_name, pretrained)
    hf_hub = config.get("hf_hub", "").rstrip("/")
    if hf_hub:
        where = f"open_clip_model.safetensors from https://huggingface.co/{hf_hub}"
    elif config.get("url"):
        where = config["url"]
    else:
        return "Pass a local .bin, .pt or .safetensors file of open_clip weights as pretrained=..."
    return (
        f"On a machine without internet access, download {where} elsewhere and pass the local "
        "file path as pretrained=..."
    )


def create_clip(
    model: str,
    pretrained: str | None = "default",
    image_size: int | None = None,
    quick_gelu: bool | None = None,
    cache_dir: str | None = None,
) -> tuple[nn.Module, ImageNormalization]:
    """Build an open_clip CLIP model and the pixel normalisation its weights expect.

    ``pretrained`` is an open_clip tag ("openai", "laion2b_s13b_b82k"), a
    local weights file, ``None`` for random initialisation, or "default" for
    the preset's own weights. ``quick_gelu=None`` turns QuickGELU on where the
    tag was trained with it (OpenAI's ViT weights); pass ``True`` when loading
    OpenAI weights from a local file, because a bare file does not record its
    activation.
    """
    model_name, default_weights = resolve_model_name(model)
    if pretrained == "default":
        pretrained = default_weights
    if pretrained is None or pretrained.strip().lower() in _NO_WEIGHTS:
        pretrained = None
    if pretrained is not None and not os.path.isfile(pretrained):
        known = open_clip.list_pretrained_tags_by_model(model_name)
        if pretrained not in known:
            looks_like_path = os.sep in pretrained or Path(pretrained).suffix != ""
            if looks_like_path:
                raise WeightsNotFoundError(
                    f"weights file {pretrained!r} not found; check the path, or pass one of the "
                    f"tags {known} for model {model_name!r}"
                )
            raise ValueError(
                f"unknown weights tag {pretrained!r} for model {model_name!r}; known tags: {known}, "
                "or pass a local weights file path"
            )
    if quick_gelu is None:
        quick_gelu = _needs_quick_gelu(model_name, pretrained)
    if pretrained is not None and os.path.isfile(pretrained) and "openai" in Path(pretrained).name.lower():
        if not quick_gelu:
            warnings.warn(
                f"{pretrained} looks like OpenAI weights, which were trained with QuickGELU; "
                "pass quick_gelu=True or accuracy drops",
                stacklevel=2,
            )

    native_size = open_clip.get_model_config(model_name)["vision_cfg"].get("image_size", 224)
    force_size = image_size if image_size is not None and image_size != native_size else None
    if force_size is not None and pretrained is not None:
        logger.info("resizing %s from its native %d px input to %d px", model_name, native_size, force_size)

    try:
        clip = open_clip.create_model(
            model_name,
            pretrained=pretrained,
            force_quick_gelu=quick_gelu,
            force_image_size=force_size,
            cache_dir=cache_dir,
        )
    except Exception as error:
        if pretrained is not None and os.path.isfile(pretrained):
            raise WeightsNotFoundError(
                f"could not load {pretrained} as open_clip weights for {model_name!r} "
                f"({type(error).__name__}: {error}); pass a .bin, .pt or .safetensors state dict "
                "saved from this model, or a weights tag"
            ) from error
        if not isinstance(error, RuntimeError):
            raise
        if pretrained is not None and "download" in str(error).lower():
            raise WeightsNotFoundError(
                f"could not get pre-trained weights {pretrained!r} for {model_name!r}: {error}. "
                + _weights_hint(model_name, pretrained)
            ) from error
        raise
    clip.eval()

    preprocess = getattr(clip.visual, "preprocess_cfg", {})
    normalization = ImageNormalization(
        mean=tuple(preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN)),  # type: ignore[arg-type]
        std=tuple(preprocess.get("std", open_clip.OPENAI_DATASET_STD)),  # type: ignore[arg-type]
    )
    logger.info(
        "built %s (%s weights, %.1f M parameters)",
        model_name,
        pretrained or "random",
        sum(p.numel() for p in clip.parameters()) / 1e6,
    )
    return clip, normalization


class TriModalCLIP(nn.Module):
    """A CLIP model with a third tower for schematic symbols.

    In stage 1 the symbol tower is the image tower itself. ``split_symbol_tower``
    starts stage 2 by making the symbol tower a copy of the trained image tower.
    All ``encode_*`` methods take normalised float pixels (B, 3, H, W) or
    token ids (B, L) and return L2-normalised embeddings (B, D).
    """

    def __init__(self, clip: nn.Module, schema: ClassSchema, tokenizer_name: str) -> None:
        super().__init__()
        self.clip = clip
        self.symbol_visual: nn.Module | None = None
        context_length = clip.context_length  # type: ignore[attr-defined]
        tokenizer = open_clip.get_tokenizer(tokenizer_name, context_length=context_length)
        self.register_buffer("prompt_tokens", tokenizer(schema.prompts), persistent=False)

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.clip.logit_scale  # type: ignore[return-value]

    @property
    def has_symbol_tower(self) -> bool:
        return self.symbol_visual is not None

    def split_symbol_tower(self) -> None:
        if self.symbol_visual is None:
            self.symbol_visual = copy.deepcopy(self.clip.visual)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.visual(pixels), dim=-1)

    def encode_symbol(self, pixels: torch.Tensor) -> torch.Tensor:
        tower = self.symbol_visual if self.symbol_visual is not None else self.clip.visual
        return F.normalize(tower(pixels), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_text(tokens), dim=-1)  # type: ignore[operator]

    def encode_prompts(self, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Embed the class prompts, all of them or those of ``labels`` (one row per label given)."""
        tokens = self.prompt_tokens if labels is None else self.prompt_tokens[labels]
        return self.encode_text(tokens)


def build_model(
    model: str,
    schema: ClassSchema,
    pretrained: str | None = "default",
    image_size: int | None = None,
    quick_gelu: bool | None = None,
    cache_dir: str | None = None,
) -> tuple[TriModalCLIP, ImageNormalization]:
    """Build the tri-modal model for ``schema`` from a preset or open_clip name (see :func:`create_clip`)."""
    clip, normalization = create_clip(model, pretrained, image_size, quick_gelu, cache_dir)
    model_name, _ = resolve_model_name(model)
    return TriModalCLIP(clip, schema, model_name), normalization
