"""The example objectives of ``intlm evolve`` (intlm/objectives.py)."""

import math
import re
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intlm import objectives
from intlm.objectives import LIPOGRAM_BITS, ByteNgram, lipogram, lipogram_shakespeare, log2_q8

from conftest import text_bytes


def test_lipogram_examples():
    assert lipogram([b"the cat sat", b"THE END", b"a, b; c!", b"", b"...", b"don't eat"]) == [1, -2, 3, 0, 0, 1]  # "don", "t", "eat"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_lipogram_counts_words_without_e_minus_words_with_one(sample):
    """Words are runs of ASCII letters; the score is an int between -words and +words."""
    words = re.findall(rb"[A-Za-z]+", sample)
    (score,) = lipogram([sample])
    assert type(score) is int and score == sum(1 for w in words if b"e" not in w.lower()) - sum(
        1 for w in words if b"e" in w.lower())
    assert lipogram([sample.replace(b"e", b"a").replace(b"E", b"A")]) == [len(words)]


@settings(max_examples=300, deadline=None)
@given(st.integers(1, (1 << 31) - 1))
def test_log2_q8_is_256_log2_within_the_tables_rounding(x):
    assert abs(int(log2_q8(np.array([x]))[0]) - 256 * math.log2(x)) <= 1.0


def ngram_by_counting(data: bytes, sample: bytes, order: int) -> float:
    """The same add-one n-gram log-likelihood, in bits, by plain counting in floats."""
    grams = Counter(data[i:i + order] for i in range(len(data) - order + 1))
    contexts = Counter(data[i:i + order - 1] for i in range(len(data) - order + 1))
    return sum(math.log2((grams[sample[i:i + order]] + 1) / (contexts[sample[i:i + order - 1]] + 256))
               for i in range(len(sample) - order + 1))


@pytest.mark.parametrize("order", [2, 3, 5])
def test_byte_ngram_equals_counting(order):
    data = text_bytes(400, seed=1)
    model = ByteNgram(np.frombuffer(data, np.uint8), order)
    samples = [data[100:140], b"zzzz qqq", b"th", b"", text_bytes(20, seed=9)[:50]]
    got = model(samples)
    assert all(type(v) is int for v in got)
    for sample, value in zip(samples, got):
        n = max(len(sample) - order + 1, 0)
        assert value / 256 == pytest.approx(ngram_by_counting(data, sample, order), abs=n / 256 + 1e-9)


def test_byte_ngram_prefers_the_corpus_to_its_bytes_shuffled():
    data = text_bytes(2000, seed=2)
    model = ByteNgram(np.frombuffer(data, np.uint8), 3)
    held_out = text_bytes(60, seed=3)[:200]
    shuffled = bytes(np.random.default_rng(0).permutation(np.frombuffer(held_out, np.uint8)))
    real, mixed = model([held_out, shuffled])
    assert real > mixed + 200 * 256  # more than a bit a byte better


def test_lipogram_shakespeare_mixes_the_two(monkeypatch):
    """LIPOGRAM_BITS bits per lipogram point plus the trigram log-likelihood (here of a small
    corpus standing in for the Shakespeare split, which the shipped function fetches once)."""
    model = ByteNgram(np.frombuffer(text_bytes(500, seed=4), np.uint8), 3)
    monkeypatch.setattr(objectives, "shakespeare_trigram", lambda: model)
    samples = [b"the cat sat on a mat", b"xq zz", b"was a man"]
    assert lipogram_shakespeare(samples) == [LIPOGRAM_BITS * 256 * w + ll for w, ll in
                                             zip(lipogram(samples), model(samples))]
    assert lipogram_shakespeare(samples)[2] > lipogram_shakespeare([b"xq zz qq x"])[0]


def test_shakespeare_trigram_is_built_once_from_the_default_corpus(monkeypatch, tmp_path):
    from intlm.data import Corpus

    calls = []

    def fake_default_corpus(cache_dir):
        calls.append(cache_dir)
        return Corpus(train=np.frombuffer(text_bytes(50, seed=5), np.uint8), val=None, meta={})

    objectives.shakespeare_trigram.cache_clear()
    monkeypatch.setattr(objectives, "default_corpus", fake_default_corpus)
    monkeypatch.setenv("INTLM_CACHE", str(tmp_path))
    try:
        first = objectives.shakespeare_trigram()
        assert objectives.shakespeare_trigram() is first and calls == [tmp_path] and first.order == 3
    finally:
        objectives.shakespeare_trigram.cache_clear()
