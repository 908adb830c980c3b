"""Backend selection. A backend provides the five hot operations with identical results:
make_noise, population_fitness, forward (unperturbed), update_sums and update (the steps). The NumPy reference is
the spec; the others must equal it bit for bit."""

import types

from .errors import IntlmError

NAMES = ("auto", "numpy", "numba")


def get(name: str) -> types.SimpleNamespace:
    if name not in NAMES:
        raise IntlmError(f"unknown backend {name!r}: choose one of {', '.join(NAMES)}")
    if name in ("auto", "numba"):
        try:
            from . import backend_numba as nb
        except ImportError as err:
            if name == "numba":
                raise IntlmError(f"the numba backend is not available: {err}") from None
        else:
            return types.SimpleNamespace(name="numba", make_noise=nb.make_noise,
                                         population_fitness=nb.population_fitness,
                                         forward=nb.forward, update_sums=nb.update_sums, update=nb.update)
    from . import es, model

    return types.SimpleNamespace(name="numpy", make_noise=model.make_noise,
                                 population_fitness=model.population_fitness,
                                 forward=model.forward, update_sums=es.update_sums, update=es.update)
