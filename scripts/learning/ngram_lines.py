"""What a count model of the same contexts reaches: interpolated Kneser-Ney on the training split.

    python scripts/learning/ngram_lines.py [--orders 6] [--discount 0.8] [--bits K] [--corpus STORE]

For each N up to --orders, a static byte model whose longest context is the last N bytes (the table of
order N reads the same bytes), counted once over the training split and scored over the whole
validation split, which it never adapts to (the compressors' lines do adapt). Interpolated
Kneser-Ney with one absolute discount D: the longest context's counts are discounted by D and
interpolated with the next shorter one's continuation counts (how many distinct bytes came before
the context and byte), down to the byte frequencies. With --bits K every context of 2 bytes or
more is first hashed to one of 2**K rows as the model's tables hash it (``context.row_index``), so
contexts sharing a row share their counts.

A reference line for the study, not part of intlm: floating point, NumPy only.
"""

import argparse

import numpy as np

from intlm.context import row_index
from intlm.data import cache_dir_default, load_corpus

from context_counts import keys as ngrams, lookup  # n-byte strings packed into uint64, the last byte lowest


def hashed(keys, order, bits):
    """(row of the ``order``-byte context, next byte) for keys of order + 1 bytes, the next lowest;
    unchanged without bits or for a 1-byte context."""
    if not bits or order < 2:
        return keys
    ctx = keys >> np.uint64(8)
    # row_index reads the byte being read first, then the bytes before: the context's lowest byte first
    history = np.stack([(ctx >> np.uint64(8 * i)) & np.uint64(255) for i in range(order)], axis=-1)
    return (row_index(history, order, bits).astype(np.uint64) << np.uint64(8)) | (keys & np.uint64(255))


def kneser_ney(train, val, orders, discount, bits=0):
    """Bits/byte of the validation split under interpolated Kneser-Ney with contexts up to ``orders`` bytes."""
    freq = np.bincount(train, minlength=256) + 1
    p = (freq / freq.sum())[val]
    scored = np.arange(len(val))
    for n in range(1, orders + 1):
        if n == orders:  # the longest context: its counts
            keys, counts = np.unique(hashed(ngrams(train, n + 1), n, bits), return_counts=True)
        else:  # a shorter one: continuation counts, the distinct bytes seen before context and byte
            longer = np.unique(ngrams(train, n + 2)) & np.uint64((1 << (8 * (n + 1))) - 1)
            keys, counts = np.unique(hashed(longer, n, bits), return_counts=True)
        contexts, first, followers = np.unique(keys >> np.uint64(8), return_index=True, return_counts=True)
        totals = np.add.reduceat(counts, first)
        here = np.zeros(len(val), np.uint64)
        here[n:] = hashed(ngrams(val, n + 1), n, bits)  # position i: the byte val[i] after its n before
        seen = scored >= n
        c = lookup(keys, counts, here) * seen
        total = lookup(contexts, totals, here >> np.uint64(8)) * seen
        kinds = lookup(contexts, followers, here >> np.uint64(8)) * seen
        p = np.where(total > 0, (np.maximum(c - discount, 0) + discount * kinds * p) / np.maximum(total, 1), p)
    return float(-np.log2(p).mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--orders", type=int, default=6, help="longest context, bytes (1..7)")
    ap.add_argument("--discount", type=float, default=0.8)
    ap.add_argument("--bits", type=int, default=0, help="hash contexts of 2+ bytes to 2**K rows (0: exact)")
    ap.add_argument("--corpus", default=None, help="a prepared store (default: the default corpus)")
    args = ap.parse_args()
    corpus = load_corpus(args.corpus, cache_dir_default())
    train, val = np.asarray(corpus.train[:], np.int64), np.asarray(corpus.val[:], np.int64)
    for n in range(1, args.orders + 1):
        bpb = kneser_ney(train, val, n, args.discount, args.bits)
        rows = f", contexts hashed to 2^{args.bits} rows" if args.bits else ""
        print(f"longest context {n} bytes{rows}: {bpb:.4f} bits/byte on the validation split ({len(val)} bytes)")


if __name__ == "__main__":
    main()
