"""Integer-only text generation from a checkpoint: temperature and top-k through integer tables.

Temperature T is given in 1/16 units (16 = 1.0): a logit u (1/16 bits) gets weight
EXP2_NEG[(best - u) * 16 / T], i.e. 2**16 * 2**(-(best - u) / (16 T)), and 0 beyond the table.
The draw is a uniform 32-bit integer from the counter hash of (seed, position), so a seed
always gives the same text.
"""

import codecs
import unicodedata

import numpy as np

from .arith import EXP2_NEG
from .config import Config
from .model import Members, read_byte, state_shape
from .noise import stream_key, uniform32

SAMPLE_TENSOR = (1 << 32) - 2  # a noise-key tensor id no parameter uses


def choose(logits, temperature_q4: int, top_k: int, keys, position: int) -> np.ndarray:
    """Draw one byte for each row of int8 logits (rows, 256) (1/16 bits), row r with the draw at
    ``position`` of the stream keys[r]; temperature 0 means greedy."""
    u = np.asarray(logits, dtype=np.int64)
    order = np.argsort(-u, axis=-1, kind="stable")  # best first, ties by byte value
    if temperature_q4 <= 0:
        return order[:, 0]
    kept = order[:, :top_k] if top_k > 0 else order
    gap = (u.max(axis=-1, keepdims=True) - np.take_along_axis(u, kept, axis=-1)) * 16 // temperature_q4
    w = np.where(gap < len(EXP2_NEG), EXP2_NEG[np.minimum(gap, len(EXP2_NEG) - 1)], 0).astype(np.int64)
    cumulative = np.cumsum(w, axis=-1)
    r = (uniform32(keys, position) * cumulative[:, -1]) >> 32  # < the total: 2**32 * 2**24 fits int64
    picked = np.count_nonzero(cumulative <= r[:, None], axis=-1)  # searchsorted(cumulative, r, "right")
    return np.take_along_axis(kept, picked[:, None], axis=-1)[:, 0]


def generate(params, cfg: Config, prompt: bytes, length: int, temperature_q4: int = 16,
             top_k: int = 0, seed: int = 0):
    """Yield ``length`` bytes (ints) continuing ``prompt`` (read after a document start), each as
    soon as it is drawn."""
    members = Members(None, cfg, 1)
    state = np.zeros(state_shape(cfg, 1), dtype=np.int64)
    keys = [stream_key(seed, SAMPLE_TENSOR, 0, 0)]
    logits = None
    for b in b"\0" + prompt:
        logits = read_byte(params, cfg, np.array([b]), state, members)
    for i in range(length):
        b = int(choose(logits, temperature_q4, top_k, keys, i)[0])
        yield b
        if i + 1 < length:
            logits = read_byte(params, cfg, np.array([b]), state, members)


def preview(params, cfg: Config, length: int, seed: int) -> str:
    """One line of text from the model, for a progress log: a document's first ``length`` bytes (or
    fewer, up to its 0 byte) at temperature 1, controls escaped, line breaks (any splitlines knows) shown as " / ", tabs as spaces."""
    out = bytearray()
    for b in generate(params, cfg, b"", length, seed=seed):
        if b == 0:
            break
        out.append(b)
    return " / ".join(escape_controls(out.decode("utf-8", errors="replace")).replace("\t", " ").splitlines())


def escape_controls(text: str) -> str:
    """Control characters other than newline and tab as visible escapes (ESC as \\x1b), so that
    a sample printed on a terminal cannot ring it, move its cursor or change its colours."""
    return "".join(ascii(c)[1:-1] if unicodedata.category(c) == "Cc" and c not in "\n\t" else c for c in text)


class TextOut:
    """Writes a sample's bytes to a text stream as they come, flushed: raw, or as UTF-8 text
    (invalid bytes shown as U+FFFD, controls escaped) ending in a newline."""

    def __init__(self, stream, raw: bool):
        stream.flush()
        self.out, self.raw, self.encoding = stream.buffer, raw, stream.encoding or "utf-8"
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write(self, data: bytes, final: bool = False) -> None:
        if not self.raw:
            text = escape_controls(self.decoder.decode(data, final)) + ("\n" if final else "")
            data = text.encode(self.encoding, errors="backslashreplace")
        self.out.write(data)
        self.out.flush()

    def close(self) -> None:
        self.write(b"", final=True)
