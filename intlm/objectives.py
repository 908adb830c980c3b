"""Example objectives for ``intlm evolve``: plain functions from samples to integer scores.

- ``lipogram``: writing without the letter e. Each word (a run of ASCII letters) scores +1 without
  an e or E and -1 with one. A count of words in sampled text has no gradient: only a method that
  needs nothing but the score, such as evolution strategies, can climb it.
- ``lipogram_shakespeare``: the lipogram's score, at LIPOGRAM_BITS bits a word, plus the sample's
  log-likelihood (in 1/256 bits) under the add-one byte trigram model of the Shakespeare training
  split, so that the text loses its e's while it keeps Shakespeare's byte statistics instead of
  drifting into e-less gibberish. (A bigram model is not enough: it scores a run of one-letter
  "words", "t s m h", about as well as Shakespeare, and the lipogram alone drifts exactly there;
  the trigram model puts such text 5 bits a byte below Shakespeare's 3.)

    intlm evolve --objective intlm.objectives:lipogram --init runs/shakespeare --out runs/lipogram

Integers throughout, as the training asks of a score. Neither module attribute PROMPTS is set, so
evolve's default prompts are used.
"""

import functools
import re

import numpy as np

from .arith import LL_ONE_BIT, int_log2_q8
from .data import cache_dir_default, default_corpus

WORD = re.compile(rb"[A-Za-z]+")
LIPOGRAM_BITS = 4  # what one word more without an e is worth against the trigram log-likelihood


def lipogram(samples: list) -> list:
    """Per sample: words without an e (or E), minus words with one."""
    return [sum(-1 if b"e" in word.lower() else 1 for word in WORD.findall(s)) for s in samples]


def log2_q8(x) -> np.ndarray:
    """256 * log2(x) (1/256 bits) for int64 arrays 1 <= x < 2**31: arith.int_log2_q8, which wants
    x >= 2**14, of x scaled up by a power of two, less that power."""
    x = np.asarray(x, dtype=np.int64)
    up = np.zeros(x.shape, dtype=np.int64)
    for _ in range(14):
        up += (x << up) < (1 << 14)
    return int_log2_q8(x << up) - 256 * up


class ByteNgram:
    """log2 p(sample) in 1/256 bits under the add-one smoothed byte n-gram model of ``data`` (uint8,
    fewer than 2**31 - 256 bytes): the sum over the sample's n-grams (context h, then byte b) of
    log2((count(h b) + 1) / (count(h .) + 256)), the counts found by binary search in the sorted
    n-grams of ``data``."""

    def __init__(self, data: np.ndarray, order: int = 3):
        if not 2 <= order <= 7 or len(data) >= (1 << 31) - 256:
            raise ValueError("an n-gram model of order 2 to 7, with counts below 2**31")
        self.order = order
        grams = _grams(data, order)
        self.grams, self.gram_counts = np.unique(grams, return_counts=True)
        self.contexts, self.context_counts = np.unique(grams >> 8, return_counts=True)

    def __call__(self, samples: list) -> list:
        out = []
        for s in samples:
            g = _grams(np.frombuffer(s, dtype=np.uint8), self.order)
            seen, context = _count(self.grams, self.gram_counts, g), _count(self.contexts, self.context_counts, g >> 8)
            out.append(int((log2_q8(seen + 1) - log2_q8(context + 256)).sum()))
        return out


def _grams(data: np.ndarray, order: int) -> np.ndarray:
    """Every run of ``order`` consecutive bytes as one int64, the first byte highest."""
    data = np.asarray(data, dtype=np.int64)
    n = max(len(data) - order + 1, 0)
    out = np.zeros(n, dtype=np.int64)
    for i in range(order):
        out = (out << 8) | data[i:i + n]
    return out


def _count(keys: np.ndarray, counts: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """counts[i] where keys[i] == query (keys sorted), else 0."""
    i = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
    return np.where(keys[i] == queries, counts[i], 0)


@functools.cache
def shakespeare_trigram() -> ByteNgram:
    """The byte trigram model of the default corpus's training split (fetched and prepared once)."""
    return ByteNgram(default_corpus(cache_dir_default()).train, order=3)


def lipogram_shakespeare(samples: list) -> list:
    """LIPOGRAM_BITS bits per lipogram point plus the Shakespeare trigram log-likelihood, in 1/256 bits."""
    words = lipogram(samples)
    return [LIPOGRAM_BITS * LL_ONE_BIT * w + ll for w, ll in zip(words, shakespeare_trigram()(samples))]
