"""Where the model runs, behind one small interface.

A backend is anything with a ``metadata`` attribute (the served model's
`modelmeta.ModelMetadata`) and ``predict(inputs) -> outputs``, where both are
dicts of numpy arrays keyed by the signature's tensor names. The function
never knows more than that; `factory.create_backend` picks one from the settings
and imports its dependencies (TensorFlow for the in-process one) only then.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from modelmeta import ModelMetadata


class Backend(Protocol):
    metadata: ModelMetadata

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model once on a batch. Raises `functions.errors.ServiceError`s."""
        ...
