"""The model adapter contract (docs/DESIGN.md: Model adapter), shared by every family.

A conversation is a list of HF chat messages::

    [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many chairs?"}]},
     {"role": "assistant", "content": [{"type": "text", "text": "two"}]}, ...]

and ``images`` holds one PIL image (or None) per conversation. Blind mode = ``blind(conversation)`` and
``None``: no image and no image tokens in the prompt. Everything goes through the checkpoint's own
processor and chat template (``AutoProcessor``), so a zoo checkpoint and a 7B hub checkpoint take the same
path. Families differ only in what they declare here: which linear layers LoRA targets, the turn-end marker.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import torch

if TYPE_CHECKING:
    from vlm.kd.cache import TopK

IGNORE_INDEX = -100  # label value the HF losses skip; the one definition (kd, tests and benches import it)

Conversation = list[dict[str, Any]]


def content_items(message: dict) -> list[dict]:
    content = message["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def has_image(conversation: Conversation) -> bool:
    return any(item.get("type") == "image" for m in conversation for item in content_items(m))


def blind(conversation: Conversation) -> Conversation:
    """The same conversation without image items (blind evaluation / text-only training)."""
    out = copy.deepcopy(conversation)
    for m in out:
        if not isinstance(m["content"], str):
            m["content"] = [item for item in m["content"] if item.get("type") != "image"]
    return out


def pick_device(device: str = "auto") -> torch.device:
    """auto: this process's GPU (``LOCAL_RANK`` under torchrun, so N ranks use N GPUs), else the CPU."""
    if device == "auto":
        if torch.cuda.is_available():
            import os

            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    return torch.device(device)


def pick_dtype(dtype: str | torch.dtype = "auto", device: torch.device | None = None) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":  # bf16 where the hardware has it, fp32 on CPU (tiny models, exact tests)
        on_gpu = device is not None and device.type == "cuda"
        return torch.bfloat16 if on_gpu and torch.cuda.is_bf16_supported() else torch.float32
    return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
            "float16": torch.float16, "fp16": torch.float16}[dtype]


def output_head(model) -> torch.nn.Module:
    """The LM head (``get_output_embeddings``) of a model, through DDP / peft wrappers."""
    inner = getattr(model, "module", model)  # DDP / FSDP1 wrappers
    return inner.get_output_embeddings()


@contextlib.contextmanager
def head_replaced(model, fn):
    """Inside the block the model's LM head computes ``fn(head_forward, hidden)`` instead of logits for every
    position: ``hidden`` is what the head receives ([batch, sequence, hidden]), ``head_forward`` maps rows
    [n, hidden] to RAW logits [n, vocabulary], and ``fn``'s result comes back as the output's ``logits``. So only
    the rows a loss or the cache needs ever meet the vocabulary, and that happens inside the model's forward —
    where an FSDP-sharded head has its weights gathered, and a loss returned through the output stays connected
    to the hooks DDP / FSDP put on forward outputs. Every family calls its head once per forward."""
    head = output_head(model)
    own = head.__dict__.get("forward")  # an instance-level forward (a wrapper's patch) to put back
    original = head.forward
    head.forward = lambda hidden: fn(original, hidden)
    try:
        yield head
    finally:
        if own is None:
            del head.forward
        else:
            head.forward = own


@dataclass
class VLMAdapter:
    """One loaded model + processor with the operations every stage needs."""

    model: Any  # a transformers PreTrainedModel (or a peft PeftModel around one)
    processor: Any  # the checkpoint's AutoProcessor
    name: str = ""
    budget_applied: dict = field(default_factory=dict)  # the image budget the family applied (apply_image_budget)

    family: ClassVar[str] = ""
    # Linear layers of the language model only: the vision tower stays frozen (PEFT full-matches this regex).
    lora_target_regex: ClassVar[str] = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    turn_end: ClassVar[str] = "<|im_end|>"  # ChatML: the assistant learns to emit it, generation stops on it
    # Full fine-tune: parameter-name prefixes that train (language model incl. an untied lm_head, and the projector);
    # everything else — the vision encoder — stays frozen.
    full_finetune_prefixes: ClassVar[tuple[str, ...]] = ("model.language_model.", "model.multi_modal_projector.", "lm_head.")

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str, adapter: str | None = None, dtype: str | torch.dtype = "auto", device: str = "auto",
             name: str = "", attn_implementation: str = "auto", image_budget: dict | None = None) -> "VLMAdapter":
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from vlm.models.options import resolve_attention

        dev = pick_device(device)
        if adapter and not (Path(adapter) / "adapter_config.json").is_file() and (Path(adapter) / "config.json").is_file():
            path, adapter = adapter, None  # a full fine-tune's output (finetune --full_finetune) replaces the base
        attn = resolve_attention(attn_implementation, dev.type)
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=pick_dtype(dtype, dev),
                                                            **({"attn_implementation": attn} if attn else {})).to(dev)
        processor = AutoProcessor.from_pretrained(path)
        applied = cls.apply_image_budget(model, processor, **(image_budget or {}))
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter)
        model.eval()
        self = cls(model=model, processor=processor, name=name or str(path), budget_applied=applied)
        self._fill_generation_defaults()
        return self

    @classmethod
    def apply_image_budget(cls, model, processor, **budget) -> dict:
        """Family hook: set the image budget on the processor AND the model config (they must agree on the
        number of image tokens); returns what was applied. Families without a budget ignore it."""
        return {}

    def base_image_tokens(self, pixel_values) -> torch.Tensor | None:
        """Family hook for the zoo's alignment stage: the LM-side features of the base image, one per vision patch
        in row-major order ([batch, patches, hidden]), from a ``training_batch``'s pixel values; None where a
        family does not provide it (its zoo entries then skip the alignment stage)."""
        return None

    def describe(self) -> dict:
        """What a stage records about the loaded model: attention kernels, dtype, image budget."""
        cfg = getattr(self.model, "config", None)
        return {"attn_implementation": getattr(cfg, "_attn_implementation", None), "dtype": str(self.model.dtype).replace("torch.", ""),
                "image_budget": dict(self.budget_applied)}

    def _fill_generation_defaults(self) -> None:
        gc = self.model.generation_config
        tok = self.tokenizer
        if gc.pad_token_id is None:
            gc.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        if gc.eos_token_id is None:
            gc.eos_token_id = tok.convert_tokens_to_ids(self.turn_end)

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def image_token_id(self) -> int:
        return self.processor.image_token_id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def lora_targets(self) -> str:
        return self.lora_target_regex

    def layer_classes(self) -> list[str]:
        """The model's repeated blocks (decoder layers, vision-encoder layers): its ``_no_split_modules`` that it
        really contains (some list classes of other configurations), e.g. FSDP's wrapping units."""
        present = {type(m).__name__ for m in self.model.modules()}
        return [c for c in getattr(self.model, "_no_split_modules", None) or [] if c in present]

    def set_full_finetune(self) -> dict[str, int]:
        """Freeze all but ``full_finetune_prefixes``; returns {trainable group: parameter count} (group = the
        matching prefix) for the run's record and the tests."""
        groups: dict[str, int] = {}
        for name, p in self.model.named_parameters():
            group = next((g for g in self.full_finetune_prefixes if name.startswith(g)), None)
            p.requires_grad = group is not None
            if group:
                groups[group.rstrip(".")] = groups.get(group.rstrip("."), 0) + p.numel()
        return groups

    # ------------------------------------------------------------------ encoding
    def render(self, conversations: Sequence[Conversation], add_generation_prompt: bool) -> list[str]:
        return [self.processor.apply_chat_template(c, tokenize=False, add_generation_prompt=add_generation_prompt)
                for c in conversations]

    def encode(self, conversations: Sequence[Conversation], images: Sequence[Any], *, add_generation_prompt: bool,
               padding_side: str) -> tuple[Any, list[str]]:
        """Processor output for a batch (images only for conversations that show one) + the rendered texts."""
        if len(images) != len(conversations):
            raise ValueError(f"{len(conversations)} conversations but {len(images)} images")
        for i, (conv, img) in enumerate(zip(conversations, images)):
            if has_image(conv) != (img is not None):
                raise ValueError(f"conversation {i}: {'an image item but no image' if img is None else 'an image but no image item'}"
                                 " (blind mode: use blind(conversation) and None)")
        texts = self.render(conversations, add_generation_prompt)
        shown = [img for img in images if img is not None]
        kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True, "padding_side": padding_side}
        if shown:
            kwargs["images"] = shown
        return self.processor(**kwargs), texts

    def on_device(self, batch):
        """A processor batch on the model's device, its pixel values in the model's dtype."""
        batch = batch.to(self.device)
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
        return batch

    # ------------------------------------------------------------------ generation
    @torch.inference_mode()
    def generate(self, conversations: Sequence[Conversation], images: Sequence[Any], gen_cfg: dict | None = None) -> list[str]:
        """Batched, left-padded, KV-cached generation of the next assistant turn; returns the decoded texts."""
        batch, _ = self.encode(conversations, images, add_generation_prompt=True, padding_side="left")
        batch = self.on_device(batch)
        cfg = {"max_new_tokens": 32, "do_sample": False, "num_beams": 1, **(gen_cfg or {})}
        out = self.model.generate(**batch, **cfg)
        new_tokens = out[:, batch["input_ids"].shape[1]:]
        return [t.strip() for t in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

    # ------------------------------------------------------------------ teacher-forced scoring
    @torch.inference_mode()
    def score(self, conversations: Sequence[Conversation], images: Sequence[Any], k: int, chunk_rows: int) -> list[TopK]:
        """Teacher-forced, per conversation: the top-k (+ tail) of log_softmax(RAW logits) at each row that predicts
        an assistant token (the ``training_batch`` targets, in order, ``target_ids`` included) -> ``vlm.kd.cache.TopK``,
        what the logit cache stores. The LM head runs inside the forward on those rows only, ``chunk_rows`` at a
        time: the target-row path training takes (``vlm.kd.cache.target_topk``)."""
        from vlm.kd.cache import target_topk

        inputs = self.on_device(self.training_batch(conversations, images))
        labels = inputs.pop("labels")
        return target_topk(self.model, inputs, labels, k, chunk_rows)

    # ------------------------------------------------------------------ training
    def training_batch(self, conversations: Sequence[Conversation], images: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Right-padded model inputs with ``labels`` on assistant tokens only (every assistant turn, each
        with its turn-end marker); everything else, image tokens and padding included, is IGNORE_INDEX."""
        batch, texts = self.encode(conversations, images, add_generation_prompt=False, padding_side="right")
        labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
        for row, (conv, text) in enumerate(zip(conversations, texts)):
            spans = self._assistant_char_spans(text, conv)
            labels[row] = self._labels_for_row(text, spans, batch["input_ids"][row], batch["attention_mask"][row])
        batch["labels"] = labels
        return batch

    def _assistant_char_spans(self, text: str, conversation: Conversation) -> list[tuple[int, int]]:
        """Character spans of the assistant texts (+ turn end) in the rendered prompt. Every text item is
        located in order, so an answer that also appears in an earlier question is not mistaken for it."""
        spans, cursor = [], 0
        for message in conversation:
            for item in content_items(message):
                if item.get("type") != "text":
                    continue
                start = text.find(item["text"], cursor)
                if start < 0:
                    raise ValueError(f"the chat template altered a {message['role']} text; cannot locate {item['text'][:40]!r}")
                end = start + len(item["text"])
                if message["role"] == "assistant":
                    if text.startswith(self.turn_end, end):
                        end += len(self.turn_end)
                    spans.append((start, end))
                cursor = end
        return spans

    def _labels_for_row(self, text: str, spans: list[tuple[int, int]], input_ids: torch.Tensor,
                        attention_mask: torch.Tensor) -> torch.Tensor:
        """Map character spans to the processor's token ids. The processor tokenises the same text after
        expanding each image placeholder into a run of image tokens, so we tokenise the unexpanded text
        with offsets and walk both sequences, skipping image runs."""
        enc = self.tokenizer(text, return_offsets_mapping=True)
        ids_plain, offsets = enc["input_ids"], enc["offset_mapping"]
        real = attention_mask.bool()
        ids_full = input_ids[real].tolist()
        labels_full = [IGNORE_INDEX] * len(ids_full)
        img = self.image_token_id
        j = 0
        for tid, (start, _) in zip(ids_plain, offsets):
            if tid == img:
                while j < len(ids_full) and ids_full[j] == img:
                    j += 1
                continue
            if j >= len(ids_full) or ids_full[j] != tid:
                raise RuntimeError("processor tokens do not line up with the tokenised chat text")
            if any(s <= start < e for s, e in spans):
                labels_full[j] = tid
            j += 1
        if j != len(ids_full):
            raise RuntimeError("processor tokens do not line up with the tokenised chat text")
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        labels[real] = torch.tensor(labels_full, dtype=input_ids.dtype)
        return labels
