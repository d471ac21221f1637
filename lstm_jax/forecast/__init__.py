"""Forecasting: the recipes and the reference forecasts they are scored beside.

* ``recipe``: the ensemble of global LSTMs (one series or a panel; ``--recipe=ensemble``);
* ``single``: one LSTM per transform chain on one series (``--recipe=transforms``);
* ``rules``: the automatic window, horizon, epoch and validation settings both recipes use;
* ``problem``: the series a run forecasts, read and split into training and test parts;
* ``references``: the reference forecasts, naive (naive, seasonal naive) and statistical
  (``statistical``: statsforecast's AutoETS, AutoTheta, AutoARIMA).
"""
