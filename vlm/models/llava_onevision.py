"""LLaVA-OneVision (SigLIP tower + projector + Qwen2 LM): ``llava-hf/llava-onevision-qwen2-{0.5b,7b}-ov-hf``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vlm.models.base import VLMAdapter

if TYPE_CHECKING:
    from vlm.models.zoo import ZooSpec

# The real checkpoints' anyres grid: 384-px tiles, 1..6 per side.
REAL_PINPOINTS = [[384 * i, 384 * j] for i in range(1, 7) for j in range(1, 7)]
# The llava-hf checkpoints' tokens after Qwen2's 151,643 regular ones, in id order (151643..151647).
QWEN2_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]


ZOO_PREFIX = "llava-ov"  # zoo:llava-ov-teacher, -student, -mirror, -mirror-152k


class Adapter(VLMAdapter):
    family = "llava_onevision"
    # image_newline is the projector's learned row separator (trained with it in LLaVA-OneVision)
    full_finetune_prefixes = ("model.language_model.", "model.multi_modal_projector.", "model.image_newline", "lm_head.")

    @classmethod
    def apply_image_budget(cls, model, processor, max_image_tiles: int = 0, **_) -> dict:
        """At most N tiles: anyres grids of <= N tiles and anyres_max_N (the LM-side cap on tile features), on the
        processor (which counts the image tokens) and the model config (which packs the features) alike."""
        if not max_image_tiles:
            return {}
        tile = processor.image_processor.size["height"]
        pinpoints = [[h, w] for h, w in model.config.image_grid_pinpoints if (h // tile) * (w // tile) <= max_image_tiles]
        if not pinpoints:
            pinpoints = [[tile, tile]]
        ratio = f"anyres_max_{max_image_tiles}"
        processor.image_processor.image_grid_pinpoints = pinpoints
        processor.vision_aspect_ratio = ratio
        model.config.image_grid_pinpoints = pinpoints
        model.config.vision_aspect_ratio = ratio
        return {"max_image_tiles": max_image_tiles, "grids": len(pinpoints), "vision_aspect_ratio": ratio}

    def base_image_tokens(self, pixel_values):
        """The language-model inputs of the base image, one per vision patch in row-major order ([batch, patches,
        hidden]): the same vision layer and projector as the forward (the base image is the processor's first
        crop and the first features it packs). The zoo's alignment stage trains through it."""
        inner = self.model.model
        hidden = inner.vision_tower(pixel_values[:, 0], output_hidden_states=True).hidden_states
        return inner.multi_modal_projector(hidden[self.model.config.vision_feature_layer])


def zoo_model(tokenizer, spec: "ZooSpec"):
    """A tiny LlavaOnevisionForConditionalGeneration + LlavaOnevisionProcessor that agree with each other.

    Trained entries: 48-px images, 16-px patches (one toy-world cell = one patch), a single 48-px pinpoint
    (the vision tower still runs twice: base image + one anyres tile -> 9 + 3*(3+1) = 21 image tokens).
    Mirror entries keep the real checkpoints' preprocessing: 384 px, patch 14, the 36 pinpoints, anyres_max_9.
    """
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor,
                              Qwen2Config, SiglipVisionConfig)

    from vlm.models.tokenizer import chat_template

    size, patch = (384, 14) if spec.mirror else (spec.image_size, spec.patch_size)
    pinpoints = REAL_PINPOINTS if spec.mirror else [[size, size]]
    # SigLIP normalisation (mean = std = 0.5), as in the real image processor config.
    image_processor = LlavaOnevisionImageProcessor(size={"height": size, "width": size}, image_grid_pinpoints=pinpoints,
                                                   image_mean=[0.5] * 3, image_std=[0.5] * 3, do_pad=True)
    video_processor = LlavaOnevisionVideoProcessor(size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    template = chat_template("<image>\n")
    processor = LlavaOnevisionProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                                        num_image_tokens=(size // patch) ** 2, vision_feature_select_strategy="full",
                                        vision_aspect_ratio="anyres_max_9", chat_template=template)
    vision = SiglipVisionConfig(hidden_size=spec.vision_hidden, intermediate_size=2 * spec.vision_hidden,
                                num_hidden_layers=spec.vision_layers, num_attention_heads=spec.vision_heads,
                                image_size=size, patch_size=patch, vision_use_head=False)
    rows = spec.vocab_rows or len(tokenizer)  # embedding / lm_head rows
    text = Qwen2Config(vocab_size=rows, hidden_size=spec.text_hidden, intermediate_size=2 * spec.text_hidden,
                       num_hidden_layers=spec.text_layers, num_attention_heads=spec.text_heads,
                       num_key_value_heads=spec.kv_heads, max_position_embeddings=4096, tie_word_embeddings=True,
                       pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    config = LlavaOnevisionConfig(vision_config=vision, text_config=text,
                                  image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                                  video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
                                  vision_feature_select_strategy="full", vision_feature_layer=-1,
                                  image_grid_pinpoints=pinpoints, vision_aspect_ratio="anyres_max_9",
                                  tie_word_embeddings=True)
    return LlavaOnevisionForConditionalGeneration(config), processor
