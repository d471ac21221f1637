"""The seed forecasting program: the next value of a MinMax-scaled sine from windows of 50.

    python -m experiments.forecast --config=experiments/configs/sine.py    # = python -m experiments.forecast

``np.sin(np.linspace(0, 100, 1000))`` scaled to (0, 1), LSTM(50) -> Dense(1), Adam + MSE, 20
epochs of batch 32, the last 20% of the windows (unshuffled) for validation. Expected on 2 CPU
cores (seed 0, a few seconds): val_mse 1.94e-06.
"""

from experiments.configs import base


def get_config():
    c = base.forecast()
    c.data.window = 50
    return c
