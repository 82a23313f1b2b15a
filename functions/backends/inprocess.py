"""Run the SavedModel inside the function's own process with TensorFlow.

TensorFlow is imported here and nowhere else in `functions`, so an adapter
configured for a remote model server starts without it. A loaded signature
is safe to call from several threads at once; TF runs them concurrently.

The signature is called with its inputs already flattened (``_call_flat``, in the
order TensorFlow flattens a dict: sorted names) when the request carries exactly its
inputs: that skips binding keyword arguments to the structured signature, about 70 µs
of CPU a call measured on the demo model (`bench.breakdown`'s backend layer). The
inputs were checked against the model's metadata before, so that binding checked
nothing new; any other case takes the ordinary keyword call.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from functions.errors import InvalidImage, ModelNotReady, ServiceError
from modelmeta import MetadataError, ModelMetadata

log = logging.getLogger(__name__)


class InProcessBackend:
    def __init__(self, model_dir: str | Path, intra_op_threads: int | None = None) -> None:
        path = Path(model_dir)
        if not (path / "saved_model.pb").is_file():
            raise ModelNotReady(f"no SavedModel at {path}; build the demo with `modelprep demo` "
                                "or set MODEL_URI to a model prepared with `modelprep wrap`")
        try:
            self.metadata = ModelMetadata.load(path)
        except MetadataError as exc:
            raise ModelNotReady(f"model at {path} has unusable metadata: {exc}") from exc
        import tensorflow as tf

        self._tf = tf
        if intra_op_threads is not None:
            _set_intra_op_threads(tf, intra_op_threads)
        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as exc:
            raise ModelNotReady(f"cannot load the SavedModel at {path}: "
                                f"{str(exc).strip().splitlines()[0][:300]}") from exc
        if self.metadata.signature not in loaded.signatures:
            raise ModelNotReady(f"model at {path} has no signature {self.metadata.signature!r}")
        self._loaded = loaded  # keeps the variables alive
        self._fn = loaded.signatures[self.metadata.signature]
        self._flat_names = _flat_input_names(self._fn)

    def _call(self, tensors: dict) -> dict:
        if self._flat_names is not None and len(tensors) == len(self._flat_names) \
                and all(name in tensors for name in self._flat_names):
            return self._fn._call_flat([tensors[name] for name in self._flat_names],
                                       self._fn.captured_inputs)
        return self._fn(**tensors)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tf = self._tf
        try:
            outputs = self._call({name: _tensor(tf, value) for name, value in inputs.items()})
        except tf.errors.InvalidArgumentError as exc:
            # The inputs were checked before; what the graph still refuses is image data
            # whose header looked right but whose body does not decode.
            log.info("model rejected input: %s", str(exc).strip().splitlines()[0][:200])
            raise InvalidImage("the image data is corrupt or truncated and could not be "
                               "decoded") from exc
        except tf.errors.ResourceExhaustedError as exc:
            raise ServiceError("the model ran out of memory on this request") from exc
        return {name: value.numpy() for name, value in outputs.items()}


def _tensor(tf: Any, value: np.ndarray) -> Any:
    """``tf.constant(value)``; a batch of encoded images (bytes objects) goes as a list,
    which TensorFlow converts 2.4x faster than a numpy object array (7 against 17 µs for
    one JPEG, more when the model's pass has left the caches cold)."""
    if value.dtype == object and value.ndim == 1:
        return tf.constant(value.tolist(), dtype=tf.string)
    return tf.constant(value)


def _flat_input_names(fn: object) -> list[str] | None:
    """The signature's input names in its flat call order, or None when the flat call is
    not there (another TensorFlow) or the signature is not keyword tensors only."""
    call_flat = getattr(fn, "_call_flat", None)
    signature = getattr(fn, "structured_input_signature", None)
    if not callable(call_flat) or not isinstance(signature, tuple) or len(signature) != 2:
        return None
    args, kwargs = signature
    if args or not isinstance(kwargs, dict) or not kwargs:
        return None
    if not all(hasattr(spec, "dtype") and hasattr(spec, "shape") for spec in kwargs.values()):
        return None
    return sorted(kwargs)


def _set_intra_op_threads(tf: Any, threads: int) -> None:
    """Threads per operation, which TensorFlow takes only before its first operation runs.

    On 2 CPUs one thread was faster for every model the bench serves (MobileNetV2 224:
    13.8 against 19.8 ms a call; the digits model 0.38 against 0.69 ms; the segmentation
    demo 41 against 45 ms), and concurrent requests keep the other CPU busy.
    """
    if tf.config.threading.get_intra_op_parallelism_threads() == threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already ran something in this process: keep its pool
        log.info("TensorFlow is already initialised; INTRA_OP_THREADS=%d not applied", threads)
