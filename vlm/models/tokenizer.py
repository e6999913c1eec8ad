"""The zoo's tokenizer: a byte-level BPE trained locally with `tokenizers` on toy-world text.

One tokenizer serves every zoo family (it carries the chat and vision special tokens of all of them,
like the real Qwen2 vocabulary that LLaVA-OneVision and Qwen2-VL share), so a zoo teacher and student
align token for token even across families. Training is deterministic for a fixed corpus.
"""

from __future__ import annotations

from typing import Iterable

# Chat + vision special tokens of the supported families (ChatML; LLaVA <image>; Qwen2-VL vision markers).
PAD = "<|endoftext|>"
SPECIAL_TOKENS = [
    PAD,
    "<|im_start|>",
    "<|im_end|>",
    "<image>",
    "<video>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Same template for all zoo families, in the shape of the real ChatML templates: images first in a
# turn, then text; {% generation %} marks the assistant text (HF's assistant-mask convention).
# `image_markup` is the family's image placeholder.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ '@IMAGE@' }}{% endif %}{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ item['text'] }}{% endgeneration %}"
    "{% else %}{{ item['text'] }}{% endif %}"
    "{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def chat_template(image_markup: str) -> str:
    return CHAT_TEMPLATE.replace("@IMAGE@", image_markup)


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 1024):
    """A PreTrainedTokenizerFast over a fresh byte-level BPE (every byte representable: no <unk>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token=PAD,
        extra_special_tokens=SPECIAL_TOKENS[3:],
    )
    tok.model_max_length = 4096
    return tok


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the vocabulary (token -> id) and the special tokens: equal fingerprints mean a teacher's
    cached token ids are the student's token ids (logits align 1:1)."""
    import hashlib
    import json

    payload = {"vocab": sorted(tokenizer.get_vocab().items()), "special": sorted(map(str, tokenizer.all_special_tokens))}
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()
