"""The Keras seed program for forecasting, reproduced for timing against experiments.forecast.

    KERAS_BACKEND=jax python benchmarks/keras_sine_seed.py

Sine series -> MinMax to (0, 1) -> windows of 50 predicting the next value ->
Sequential([Input((50, 1)), LSTM(50), Dense(1)]), Adam, MSE, 20 epochs of batch 32 with the last
20% of windows for validation. Prints the first 10 predictions in original units and the final
val_loss. Needs only keras, a backend and numpy: the scaler is written out below instead of sklearn's.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import numpy as np

WINDOW = 50

series = np.sin(np.linspace(0, 100, 1000)).reshape(-1, 1)

# MinMaxScaler(feature_range=(0, 1)), fitted on the whole series as the original does.
lo, hi = series.min(axis=0), series.max(axis=0)
scaled = (series - lo) / (hi - lo)
inverse = lambda v: v * (hi - lo) + lo

x = np.array([scaled[i : i + WINDOW] for i in range(len(scaled) - WINDOW)])
y = np.array([scaled[i + WINDOW] for i in range(len(scaled) - WINDOW)])

model = keras.Sequential([keras.Input((WINDOW, 1)), keras.layers.LSTM(50), keras.layers.Dense(1)])
model.compile(optimizer="adam", loss="mse")
history = model.fit(x, y, epochs=20, batch_size=32, validation_split=0.2)

predictions = inverse(model.predict(x))
print(predictions[:10])
print(f"final val_loss: {history.history['val_loss'][-1]:.3e}")
