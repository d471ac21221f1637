"""lstm_jax: LSTM networks for time series in JAX and Flax NNX."""

from lstm_jax.errors import CheckpointError, ConfigError, DataError, NonFiniteError, UserError
from lstm_jax.nn.cells import CELLS, LSTMCell, RecurrentCell, get_cell, register
from lstm_jax.nn.layers import LSTM, Bidirectional, LSTMStack
from lstm_jax.nn.models import Classifier, Forecaster, ModelConfig
from lstm_jax.nn.stream import Stream, step_fn

__all__ = [
    "CELLS", "LSTMCell", "RecurrentCell", "get_cell", "register",
    "LSTM", "Bidirectional", "LSTMStack",
    "Classifier", "Forecaster", "ModelConfig", "Stream", "step_fn",
    "UserError", "ConfigError", "DataError", "CheckpointError", "NonFiniteError",
]
