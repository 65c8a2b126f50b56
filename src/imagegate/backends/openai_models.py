"""What each known OpenAI image model accepts, checked before any upstream spend."""

from __future__ import annotations

from dataclasses import dataclass

from imagegate.backends.base import Operation, RequestShape
from imagegate.errors import InvalidRequest

GPT_IMAGE_SIZES = frozenset({"auto", "1024x1024", "1536x1024", "1024x1536"})
GPT_IMAGE_QUALITIES = frozenset({"auto", "low", "medium", "high"})


@dataclass(frozen=True)
class ModelRules:
    """Limits of one model family."""

    sizes: frozenset[str] | None  # None: any size the common validation allows
    qualities: frozenset[str]
    max_n: int  # per upstream call; more images are made by sequential calls
    max_edit_images: int  # 0: no edits
    prompt_chars: int
    gpt_image: bool  # base64 answers and output_format/background/moderation/compression
    styles: bool = False
    variations: bool = False


GPT_IMAGE = ModelRules(
    GPT_IMAGE_SIZES, GPT_IMAGE_QUALITIES, max_n=10, max_edit_images=16, prompt_chars=32_000, gpt_image=True
)
KNOWN_MODELS: dict[str, ModelRules] = {
    "dall-e-2": ModelRules(
        frozenset({"256x256", "512x512", "1024x1024"}),
        frozenset({"auto", "standard"}),
        max_n=10,
        max_edit_images=1,
        prompt_chars=1000,
        gpt_image=False,
        variations=True,
    ),
    "dall-e-3": ModelRules(
        frozenset({"1024x1024", "1792x1024", "1024x1792"}),
        frozenset({"auto", "standard", "hd"}),
        max_n=1,
        max_edit_images=0,
        prompt_chars=4000,
        gpt_image=False,
        styles=True,
    ),
    "gpt-image-1": GPT_IMAGE,
    "gpt-image-1-mini": GPT_IMAGE,
    "gpt-image-1.5": GPT_IMAGE,
    # Newer GPT image models take flexible sizes; the provider checks them.
    "gpt-image-2": ModelRules(
        None, GPT_IMAGE_QUALITIES, max_n=10, max_edit_images=16, prompt_chars=32_000, gpt_image=True
    ),
}
GPT_ONLY = ("background", "moderation", "output_compression", "input_fidelity")


def rules_for(model: str) -> ModelRules | None:
    """The rules of a known model; None for names we do not know (compatible providers' own models)."""
    return KNOWN_MODELS.get(model)


def check_request(model: str, request: RequestShape) -> None:
    """InvalidRequest naming the field, for anything the known model would refuse."""
    rules = rules_for(model)
    if rules is None:
        return
    if rules.sizes is not None and request.size != "auto" and request.size not in rules.sizes:
        raise InvalidRequest(f"{model} supports sizes {', '.join(sorted(rules.sizes))}.", param="size")
    if request.quality not in rules.qualities:
        raise InvalidRequest(f"{model} supports quality {', '.join(sorted(rules.qualities))}.", param="quality")
    if len(request.prompt) > rules.prompt_chars:
        raise InvalidRequest(f"{model} takes prompts of at most {rules.prompt_chars} characters.", param="prompt")
    if request.operation == Operation.VARIATION and not rules.variations:
        raise InvalidRequest(f"{model} does not make variations; use dall-e-2.", param="model")
    if request.operation == Operation.EDIT and len(request.references) > rules.max_edit_images:
        most = rules.max_edit_images
        raise InvalidRequest(
            f"{model} does not edit images." if most == 0 else f"{model} edits at most {most} image(s).",
            param="image",
        )
    if request.params.get("style") and not rules.styles:
        raise InvalidRequest(f"{model} does not take a style.", param="style")
    if not rules.gpt_image:
        given = [name for name in GPT_ONLY if request.params.get(name) is not None]
        if given:
            raise InvalidRequest(f"{model} does not take {given[0]}.", param=given[0])
        if request.output_format != "png":
            raise InvalidRequest(f"{model} makes PNG images only.", param="output_format")


def upstream_size(model: str, size: str) -> str:
    """The size to send: 'auto' becomes 1024x1024 for models that do not know 'auto'."""
    rules = rules_for(model)
    if size == "auto" and rules is not None and rules.sizes is not None and "auto" not in rules.sizes:
        return "1024x1024"
    return size
