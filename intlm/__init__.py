"""intlm: integer-only byte-level language models trained by EGGROLL evolution strategies."""

__version__ = "0.1.0"

import os as _os
import sys as _sys

_argv = getattr(_sys, "orig_argv", [])
if _os.path.basename(_sys.argv[0] if _sys.argv else "") == "intlm" or any(
        a == "-m" and b == "intlm.cli" for a, b in zip(_argv, _argv[1:])):
    # the command is starting (its console script, or python -m intlm.cli, not another module of the
    # package): no traceback for a Ctrl-C while its modules load (cli._main takes over)
    from .signals import quiet_start

    quiet_start()
