"""Throughput benchmark (the same as `intlm bench`): training vs inference tokens/s, multiply-adds/s
against this machine's int8 product limit, phase shares and peak memory. Arguments as `intlm bench`."""

import sys

from intlm.cli import main

if __name__ == "__main__":
    sys.argv = ["intlm", "bench"] + sys.argv[1:]
    main()
