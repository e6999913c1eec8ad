"""Qwen2-VL / Qwen2.5-VL (native-resolution ViT with 2×2 patch merging + Qwen2 LM): ``Qwen/Qwen2-VL-2B-Instruct``, …"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vlm.models.base import VLMAdapter

if TYPE_CHECKING:
    from vlm.models.zoo import ZooSpec

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]  # the real checkpoints' image normalisation
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
# The real checkpoints' tokens after Qwen2's 151,643 regular ones, in id order (151643..151656).
QWEN2_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                        "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                        "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]


ZOO_PREFIX = "qwen2-vl"  # zoo:qwen2-vl-teacher, -student, -mirror, -mirror-152k


class Adapter(VLMAdapter):
    family = "qwen2_vl"  # also serves qwen2_5_vl: same processor contract, same LM layer names
    # the merger is Qwen2-VL's projector (vision patches -> LM width); the rest of model.visual is the encoder
    full_finetune_prefixes = ("model.language_model.", "model.visual.merger.", "lm_head.")

    @classmethod
    def apply_image_budget(cls, model, processor, min_pixels: int = 0, max_pixels: int = 0, **_) -> dict:
        """Bounds on the resized image's pixels (image tokens = pixels / 28²); the model reads the grid from
        ``image_grid_thw``, so only the processor changes."""
        if not (min_pixels or max_pixels):
            return {}
        ip = processor.image_processor
        size = dict(ip.size)
        if min_pixels:
            size["shortest_edge"] = min_pixels
        if max_pixels:
            size["longest_edge"] = max_pixels
        ip.size = type(ip.size)(**size) if not isinstance(ip.size, dict) else size
        return {"min_pixels": size["shortest_edge"], "max_pixels": size["longest_edge"]}


def mrope_section(head_dim: int) -> list[int]:
    """Split of the rotary half-dimension over (time, height, width), in Qwen2-VL's 1 : 1.5 : 1.5 ratio."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def zoo_model(tokenizer, spec: "ZooSpec"):
    """A tiny Qwen2VLForConditionalGeneration + Qwen2VLProcessor.

    Trained entries: 48-px images, 8-px patches merged 2×2, so each of the 9 image tokens covers one
    16-px toy-world cell. Mirror entries keep the real preprocessing: patch 14, merge 2, temporal patch 2,
    min/max pixels 56²…28²·1280, CLIP normalisation.
    """
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    from vlm.models.tokenizer import chat_template

    if spec.mirror:
        patch, min_px, max_px = 14, 56 * 56, 28 * 28 * 1280
    else:
        patch, min_px, max_px = spec.patch_size // 2, spec.image_size**2, spec.image_size**2
    pix = {"patch_size": patch, "merge_size": 2, "temporal_patch_size": 2, "image_mean": CLIP_MEAN, "image_std": CLIP_STD}
    image_processor = Qwen2VLImageProcessor(min_pixels=min_px, max_pixels=max_px, **pix)
    video_processor = Qwen2VLVideoProcessor(min_pixels=min_px, max_pixels=max_px * 4, **pix)
    template = chat_template("<|vision_start|><|image_pad|><|vision_end|>")
    processor = Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                                 chat_template=template)
    ids = tokenizer.convert_tokens_to_ids
    head_dim = spec.text_hidden // spec.text_heads
    rows = spec.vocab_rows or len(tokenizer)  # embedding / lm_head rows
    config = Qwen2VLConfig(
        vision_config={"depth": spec.vision_layers, "embed_dim": spec.vision_hidden, "hidden_size": spec.text_hidden,
                       "num_heads": spec.vision_heads, "patch_size": patch, "spatial_merge_size": 2,
                       "temporal_patch_size": 2, "mlp_ratio": 2},
        text_config={"vocab_size": rows, "hidden_size": spec.text_hidden, "intermediate_size": 2 * spec.text_hidden,
                     "num_hidden_layers": spec.text_layers, "num_attention_heads": spec.text_heads,
                     "num_key_value_heads": spec.kv_heads, "max_position_embeddings": 4096,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section(head_dim)},
                     "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id, "bos_token_id": None},
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )
    return Qwen2VLForConditionalGeneration(config), processor
