"""pgsl-flower: federated split learning with the PGSL defense, as a Flower app."""

__version__ = "0.1.0"


def simulate(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
    """Run a simulation; see :func:`pgsl_flower.simulation.simulate`."""
    from pgsl_flower.simulation import simulate as _simulate

    return _simulate(*args, **kwargs)
