"""Cobra: a Mamba vision-language model as real transformers classes.

Cobra (Zhao et al., 2024, "Cobra: Extending Mamba to Multi-Modal Large Language Model") is LLaVA with the
Transformer LM swapped for Mamba: vision encoder -> 2-layer MLP projector -> Mamba LM. We keep a single
SigLIP-style vision tower (the paper fuses DINOv2 + SigLIP). Image patch features replace the ``<image>``
placeholder tokens that the processor expanded in the prompt, exactly like LLaVA with
``vision_feature_select_strategy="full"`` (SigLIP has no CLS token, so every patch is one image token).

Importing this module registers ``model_type="cobra"`` with ``AutoConfig``, ``AutoModelForImageTextToText`` and
``AutoModelForCausalLM``, so ``AutoModelForImageTextToText.from_pretrained(dir)`` works without
``trust_remote_code``.

Kernels: the language model is transformers' own ``MambaForCausalLM``. On a GPU with ``mamba-ssm`` and
``causal-conv1d`` installed it uses their fused CUDA kernels automatically; elsewhere (CPU, tests) it runs the
pure-torch selective scan. Nothing here depends on which path runs.

Padding: ``MambaMixer`` multiplies its inputs by the 2D ``attention_mask`` (before ``in_proj`` and again before
the SSM), so a left-padded position feeds zeros into the conv window and leaves the recurrent state at zero:
real tokens see exactly what they would without padding (this needs ``use_bias=False``, Mamba's default, so
``in_proj`` maps zeros to zeros). Batched generation therefore pads on the left. Train with right padding: the
fused ``mamba_inner_fn`` training kernel only masks before ``in_proj``, and causal models never let trailing
pads reach earlier tokens anyway.
"""

from typing import Any, Sequence

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    GenerationMixin,
    LlavaProcessor,
    MambaConfig,
    MambaForCausalLM,
    PreTrainedConfig,
    PreTrainedModel,
    SiglipImageProcessor,
    SiglipVisionConfig,
    SiglipVisionModel,
)
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.models.mamba.modeling_mamba import MambaCausalLMOutput

from vlm.models.base import VLMAdapter

IMAGE_TOKEN = "<image>"
# Cobra has no Qwen2 release: its real-vocabulary mirror uses LLaVA-OneVision's set (with the `<image>` we expand).
QWEN2_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", IMAGE_TOKEN, "<video>"]

__all__ = ["IMAGE_TOKEN", "CobraConfig", "CobraForConditionalGeneration", "make_cobra_processor"]


@strict
class CobraConfig(PreTrainedConfig):
    """Composite config: ``vision_config`` (SigLIP vision) + ``text_config`` (Mamba).

    Sub-configs follow the transformers 5 composite pattern (``sub_configs_defaults``, as in ``LlavaConfig``):
    each may be given as a config object, a dict (e.g. from ``config.json``) or ``None`` (defaults), so
    ``save_pretrained`` / ``from_pretrained`` round-trip.

    image_token_id: id of ``<image>`` in the tokenizer; those positions receive the projected patch features.
        The default is only a placeholder: set it from ``processor.image_token_id``.
    vision_feature_layer: ``-1`` uses SigLIP's ``last_hidden_state`` (after its ``post_layernorm``); any other
        index selects ``hidden_states[i]`` of the encoder (raw layer output), e.g. ``-2`` as in Cobra/Prismatic.
    tie_word_embeddings: ``None`` follows ``text_config.tie_word_embeddings`` (Mamba ties by default); an explicit
        value is written through to ``text_config``, which is what the Mamba submodel reads when tying.
    """

    model_type = "cobra"
    sub_configs_defaults = {
        "vision_config": SiglipVisionConfig,
        "text_config": MambaConfig,
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_token_id: int = 50277
    projector_hidden_act: str = "gelu"
    vision_feature_layer: int = -1
    initializer_range: float = 0.02  # projector init (the sub-models use their own config's ranges)
    tie_word_embeddings: bool | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        # Cobra feeds patch features to the projector and never uses SigLIP's attention-pooling head: dropping it
        # avoids dead parameters (DDP "unused parameters", wasted memory). Pretrained "head.*" weights are ignored.
        self.vision_config.vision_use_head = False
        if self.tie_word_embeddings is None:
            self.tie_word_embeddings = self.text_config.tie_word_embeddings
        else:
            self.text_config.tie_word_embeddings = self.tie_word_embeddings


class CobraMultiModalProjector(nn.Module):
    """Linear -> act -> Linear from the vision width to the LM width (LLaVA-1.5 / Cobra ``gelu-mlp``)."""

    def __init__(self, config: CobraConfig) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(config.vision_config.hidden_size, config.text_config.hidden_size)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(config.text_config.hidden_size, config.text_config.hidden_size)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(image_features)))


class CobraPreTrainedModel(PreTrainedModel):
    config: CobraConfig
    # `base_model` is the LM, so a plain MambaForCausalLM checkpoint ("backbone.*", "lm_head.*") loads into
    # `language_model.*` through transformers' prefix handling; Cobra checkpoints load unchanged.
    base_model_prefix = "language_model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["SiglipEncoderLayer", "MambaBlock"]
    _skip_keys_device_placement = ["cache_params", "past_key_values"]
    # Attention only exists in the SigLIP tower, which supports these backends.
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    # Recurrent state cannot be rolled back: generate() then refuses assisted decoding, as for Mamba.
    _is_stateful = True


def _prefer_parallel_scan(language_model) -> None:
    """Without the mamba-ssm kernels, transformers runs the selective scan as a Python loop over the sequence;
    with ``mambapy`` installed it can use its parallel scan instead (same maths, 6.4x faster training steps on
    2 CPU cores). Set on the modules, not the config, so saved checkpoints stay unchanged."""
    from transformers.models.mamba.modeling_mamba import is_mambapy_available

    if is_mambapy_available():
        for module in language_model.modules():
            if hasattr(module, "use_mambapy"):
                module.use_mambapy = True


class CobraForConditionalGeneration(CobraPreTrainedModel, GenerationMixin):
    """SigLIP vision tower + MLP projector + ``MambaForCausalLM``; returns the LM's ``MambaCausalLMOutput``.

    Labels are the LM's (shifted inside, ``-100`` ignored): mask the image-token positions yourself.
    """

    def __init__(self, config: CobraConfig) -> None:
        super().__init__(config)
        self.vision_tower = SiglipVisionModel(config.vision_config)
        self.multi_modal_projector = CobraMultiModalProjector(config)
        self.language_model = MambaForCausalLM(config.text_config)
        self.post_init()
        _prefer_parallel_scan(self.language_model)

    # --- embeddings (delegated to the LM so resize_token_embeddings / tying act on the Mamba weights) ---
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    # --- vision ---
    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(batch, 3, H, W)`` -> ``(batch, num_patches, text_hidden)``; all patches (SigLIP has no CLS)."""
        pixel_values = pixel_values.to(self.vision_tower.dtype)
        layer = self.config.vision_feature_layer
        if layer == -1:
            features = self.vision_tower(pixel_values).last_hidden_state
        else:
            features = self.vision_tower(pixel_values, output_hidden_states=True).hidden_states[layer]
        return self.multi_modal_projector(features)

    def _merge_image_features(
        self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor, image_features: torch.Tensor
    ) -> torch.Tensor:
        if input_ids is not None:
            mask = input_ids == self.config.image_token_id
        else:  # embeddings given directly: find the placeholders by their embedding, as LLaVA does
            token = torch.tensor(self.config.image_token_id, device=inputs_embeds.device)
            mask = (inputs_embeds == self.get_input_embeddings()(token)).all(-1)
        n_tokens, n_features = int(mask.sum()), image_features.shape[0] * image_features.shape[1]
        if n_tokens != n_features:
            raise ValueError(
                f"Image features and image tokens do not match: {n_tokens} tokens with id "
                f"{self.config.image_token_id} in the text but {n_features} image features "
                f"({image_features.shape[0]} images x {image_features.shape[1]} patches)."
            )
        mask = mask.unsqueeze(-1).expand_as(inputs_embeds).to(inputs_embeds.device)
        return inputs_embeds.masked_scatter(mask, image_features.to(inputs_embeds.device, inputs_embeds.dtype))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        cache_params: Cache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Any,
    ) -> tuple | MambaCausalLMOutput:
        """Extra ``kwargs`` (e.g. ``num_items_in_batch`` from the Trainer) go to the LM's loss."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        kwargs.pop("cache_position", None)  # removed from transformers' Mamba; the cache tracks its own state

        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        if pixel_values is not None:
            image_features = self.get_image_features(pixel_values)
            inputs_embeds = self._merge_image_features(input_ids, inputs_embeds, image_features)

        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            labels=labels,
            cache_params=cache_params,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            return_dict=return_dict,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        cache_params: Cache | None = None,
        attention_mask: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        is_first_iteration: bool | None = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        decoding = bool(use_cache) and not is_first_iteration
        # The generic preparation slices input_ids to the new token once a cache exists and forwards kwargs.
        model_inputs = super().prepare_inputs_for_generation(
            input_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            cache_params=cache_params,
            attention_mask=attention_mask,
            is_first_iteration=is_first_iteration,
            **kwargs,
        )
        # Prefill (or every step without a cache, which re-reads the whole prompt) sees the image; decode steps
        # only feed the last token, whose context the recurrent state already holds.
        if not decoding:
            model_inputs["pixel_values"] = pixel_values
        else:
            model_inputs.pop("pixel_values", None)
            # Same as MambaForCausalLM: the single new token is real and padding is already absorbed in the state.
            model_inputs["attention_mask"] = None
        return model_inputs

    def _prepare_cache_for_generation(
        self, generation_config: Any, model_kwargs: dict[str, Any], *args: Any, **kwargs: Any
    ) -> None:
        # generate() files the cache it creates under "cache_params" only for classes whose name contains "mamba";
        # under "past_key_values" its prefill calls `get_seq_length()`, which a Mamba (linear-attention-only)
        # DynamicCache refuses. Rename it, so generation runs exactly as for MambaForCausalLM.
        super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)
        if model_kwargs.get("past_key_values") is not None:
            model_kwargs["cache_params"] = model_kwargs.pop("past_key_values")


def make_cobra_processor(
    tokenizer: Any,
    image_size: int,
    patch_size: int,
    image_mean: Sequence[float] = (0.5, 0.5, 0.5),
    image_std: Sequence[float] = (0.5, 0.5, 0.5),
    chat_template: str | None = None,
) -> LlavaProcessor:
    """A stock ``LlavaProcessor`` for Cobra: SigLIP preprocessing at ``image_size`` and ``<image>`` expanded to
    ``(image_size // patch_size) ** 2`` tokens, one per SigLIP patch feature (no CLS: ``"full"`` strategy).

    If the tokenizer lacks ``<image>`` it is added as a special token (mutating ``tokenizer``): then resize the
    LM embeddings and set ``config.image_token_id = processor.image_token_id``.
    """
    # No divisibility check: SigLIP-so400m (the real Cobra tower) runs 384 px at patch 14 -> 27x27 patches, the
    # conv dropping the 6 leftover pixels, and LlavaProcessor counts (384 // 14)^2 = 729 tokens the same way.
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    image_processor = SiglipImageProcessor(
        size={"height": image_size, "width": image_size},
        image_mean=list(image_mean),
        image_std=list(image_std),
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="full",
        chat_template=chat_template,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=0,
    )


AutoConfig.register(CobraConfig.model_type, CobraConfig, exist_ok=True)
AutoModelForImageTextToText.register(CobraConfig, CobraForConditionalGeneration, exist_ok=True)
# Text-only use (blind prompts) through the causal-LM auto class loads the same full model, like Gemma 3 / Mistral 3.
AutoModelForCausalLM.register(CobraConfig, CobraForConditionalGeneration, exist_ok=True)


# ---------------------------------------------------------------------------------------------- family
ZOO_PREFIX = "cobra"  # zoo:cobra-teacher, -student, -mirror, -mirror-152k


class Adapter(VLMAdapter):
    family = "cobra"
    # Mamba mixer projections of the LM; SigLIP's attention out_proj lives under vision_tower and is excluded.
    lora_target_regex = r".*language_model.*\.(in_proj|x_proj|dt_proj|out_proj)"
    full_finetune_prefixes = ("language_model.", "multi_modal_projector.")  # the Mamba LM holds its own lm_head


def assemble(vision: str, language: str, vision_feature_layer: int = -2):
    """(CobraForConditionalGeneration, processor) from a pretrained SigLIP checkpoint and a pretrained Mamba LM:
    both weight sets copied in unchanged, a fresh projector, the LM's tokenizer + ``<|im_start|>``,
    ``<|im_end|>`` and ``<image>`` (embedding rows added, drawn around the mean embedding: transformers'
    ``mean_resizing``), ChatML template."""
    from transformers import AutoTokenizer

    from vlm.models.tokenizer import chat_template

    vision_config = AutoConfig.from_pretrained(vision)
    vision_config = getattr(vision_config, "vision_config", vision_config)  # a full SigLIP (text + vision) too
    tokenizer = AutoTokenizer.from_pretrained(language)
    tokenizer.add_tokens(["<|im_start|>", "<|im_end|>"], special_tokens=True)
    tokenizer.eos_token = "<|im_end|>"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        stats = SiglipImageProcessor.from_pretrained(vision)
        mean_std = {"image_mean": stats.image_mean, "image_std": stats.image_std}
    except OSError:  # a bare vision checkpoint without preprocessor_config.json: SigLIP's own defaults
        mean_std = {}
    processor = make_cobra_processor(tokenizer, vision_config.image_size, vision_config.patch_size,
                                     chat_template=chat_template("<image>\n"), **mean_std)
    lm = MambaForCausalLM.from_pretrained(language)
    text_config = lm.config
    text_config.pad_token_id, text_config.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    config = CobraConfig(vision_config=vision_config.to_dict(), text_config=text_config.to_dict(),
                         image_token_id=processor.image_token_id, vision_feature_layer=vision_feature_layer)
    model = CobraForConditionalGeneration(config)
    vision_state = SiglipVisionModel.from_pretrained(vision).state_dict()
    missing, _ = model.vision_tower.load_state_dict(vision_state, strict=False)
    if missing:  # (unexpected: SigLIP's pooling head, dropped on purpose)
        raise ValueError(f"{vision}: vision weights missing for {missing[:5]}")
    old_vocab = lm.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > old_vocab:
        lm.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    model.language_model.resize_token_embeddings(lm.get_input_embeddings().weight.shape[0])
    model.language_model.load_state_dict(lm.state_dict())
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, processor


def zoo_model(tokenizer, spec):
    """A tiny Cobra: trained entries use 48-px images / 16-px patches (9 image tokens, one per toy-world cell);
    mirror entries use the original Cobra's SigLIP preprocessing (384 px, patch 14 -> 729 image tokens)."""
    from transformers import MambaConfig, SiglipVisionConfig

    from vlm.models.tokenizer import chat_template

    size, patch = (384, 14) if spec.mirror else (spec.image_size, spec.patch_size)
    processor = make_cobra_processor(tokenizer, size, patch, chat_template=chat_template("<image>\n"))
    vision = SiglipVisionConfig(hidden_size=spec.vision_hidden, intermediate_size=2 * spec.vision_hidden,
                                num_hidden_layers=spec.vision_layers, num_attention_heads=spec.vision_heads,
                                image_size=size, patch_size=patch)
    # Mamba blocks have no attention heads: depth and width come from the spec; state size as in mamba-130m.
    rows = spec.vocab_rows or len(tokenizer)  # embedding / lm_head rows
    text = MambaConfig(vocab_size=rows, hidden_size=spec.text_hidden, num_hidden_layers=2 * spec.text_layers,
                       state_size=16, expand=2, pad_token_id=tokenizer.pad_token_id,
                       eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    config = CobraConfig(vision_config=vision, text_config=text, image_token_id=processor.image_token_id)
    return CobraForConditionalGeneration(config), processor
