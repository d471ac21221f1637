"""From a trained run to answers: load it and predict (``run``), export it (``export``, ``onnx``)."""

from lstm_jax.inference.run import ClassifierRun, ForecastRun, load_run

__all__ = ["ClassifierRun", "ForecastRun", "load_run"]
