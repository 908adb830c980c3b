"""intlm: integer-only byte-level language models trained by EGGROLL evolution strategies."""

__version__ = "0.1.0"

import os as _os
import sys as _sys

if _sys.argv and (_sys.argv[0] == "-m" or _os.path.basename(_sys.argv[0]) == "intlm"):
    # the command is starting (its console script, or python -m intlm.cli): no traceback for a Ctrl-C
    # while its modules load (cli._main takes over)
    from .signals import quiet_start

    quiet_start()
