"""``aiflows.utils.general_helpers``: the helpers flow scripts use."""

from __future__ import annotations

import os
from typing import Any

from ....config import load_yaml

__all__ = ["read_yaml_file"]


def read_yaml_file(path_to_file: str | os.PathLike[str], resolve: bool = True) -> dict[str, Any]:
    """The mapping a YAML file holds (:func:`flowplex.load_yaml`).

    ``resolve`` is accepted for aiflows' signature; flowplex configs have no interpolations to
    resolve.
    """
    return load_yaml(path_to_file)
