"""Where a checkpoint loses its bits: the validation split's bytes grouped by how often the context
before them occurs in the training split, with the model's bits/byte in each group beside what the
training counts of that context alone give.

    python scripts/learning/context_counts.py RUN_OR_CHECKPOINT [--orders 4,5]

For each order n, a validation byte's context is the n bytes before it; "count" is how often those
n bytes occur in the training split. The count estimate is the add-1/2 estimate of the byte from the
training split's counts of that context alone, -log2((c(context, byte) + 1/2) / (c(context) + 128)).
Where the model is no better than that estimate in frequent contexts, it is not using longer
contexts there. Floats only for the report.
"""

import argparse

import numpy as np

from intlm.backends import get
from intlm.data import cache_dir_default, load_corpus
from intlm.model import state_shape
from intlm.run import load_model

BLOCK = 1 << 16  # bytes a forward call reads; the state carries from call to call
GROUPS = ((0, 1), (1, 8), (8, 64), (64, 512), (512, None))


def model_bits(path, val) -> np.ndarray:
    """Bits of each byte val[1:], the split read as one stream from a reset state (intlm eval reads it
    as 256 streams with a burn-in each; at the 30-minute checkpoint 2.4327 against its 2.4328)."""
    run, _ = load_model(path, quiet=True)
    backend = get("auto")
    state = np.zeros(state_shape(run.cfg, 1), np.int8)
    ll = np.concatenate([backend.forward(run.params, run.cfg, val[None, b:b + BLOCK + 1], state)[0]
                         for b in range(0, len(val) - 1, BLOCK)])
    return -ll.astype(np.float64) / 256


def keys(data, n) -> np.ndarray:
    """The n-byte strings of ``data`` at each start, packed into uint64."""
    a = np.asarray(data, np.uint64)
    k = np.zeros(len(a) - n + 1, np.uint64)
    for i in range(n):
        k = (k << np.uint64(8)) | a[i:len(a) - n + 1 + i]
    return k


def lookup(table, counts, queries) -> np.ndarray:
    """counts[i] for each query equal to table[i] (table sorted, each key once), else 0."""
    at = np.minimum(np.searchsorted(table, queries), len(table) - 1)
    return np.where(table[at] == queries, counts[at], 0)


def counts_of(train, queries, n) -> np.ndarray:
    """How often each packed n-byte string of ``queries`` occurs in ``train``."""
    u, c = np.unique(keys(train, n), return_counts=True)
    return lookup(u, c, queries)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("path")
    ap.add_argument("--orders", default="4,5")
    args = ap.parse_args()
    corpus = load_corpus(None, cache_dir_default())
    scored = np.asarray(corpus.val)
    bits = model_bits(args.path, scored)
    train = np.asarray(corpus.train)
    print(f"model: {bits.mean():.4f} bits/byte over {len(bits)} validation bytes")
    for n in (int(o) for o in args.orders.split(",")):
        # byte j + n of ``scored`` follows the context scored[j:j + n]; its bits are bits[j + n - 1]
        context = counts_of(train, keys(scored[:-1], n), n)
        joint = counts_of(train, keys(scored, n + 1), n + 1)
        estimate = -np.log2((joint + 0.5) / (context + 128.0))
        b = bits[n - 1:]
        print(f"order {n}: | context count | share of bytes | model bits/byte | count estimate | model's share of the total |")
        for lo, hi in GROUPS:
            m = (context >= lo) & (context < (hi or np.iinfo(np.int64).max))
            print(f"  | {lo}{'+' if hi is None else f'-{hi - 1}'} | {m.mean():.3f} | {b[m].mean():.3f} | "
                  f"{estimate[m].mean():.3f} | {b[m].sum() / len(b):.3f} |")


if __name__ == "__main__":
    main()
