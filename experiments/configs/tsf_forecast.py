"""A global model over every series of a Monash ``.tsf`` file (horizon and frequency from its header).

    python -m experiments.forecast --dataset=tsf:../shared/data/forecast/m1_yearly_dev.tsf
    python -m experiments.forecast --dataset=tsf:../shared/data/forecast/m1_yearly_dev.tsf --quantiles=0.1,0.5,0.9

(a tsf dataset without ``--config`` uses this file). Expected (seed 0, 2 shared CPU cores, load average ~7:
71 s wall): mean MASE 4.649 over the 90 M1 yearly series, against AutoETS 4.704, AutoTheta 4.505,
AutoARIMA 4.516, naive 5.446; with --quantiles=0.1,0.5,0.9 the 80% interval covers 73.9% of the
test values (mean MASE 4.682). The last ``@horizon`` values of each series
are its test (``--test_size`` overrides), the season comes from ``@frequency`` (``--season``
overrides); the summary reports the means over series (``test_mase``, ``test_smape``, ...) beside
the reference forecasts (naive; statsforecast's AutoETS, AutoTheta and AutoARIMA) on the same splits, and
``per_series.csv`` each series' own. MASE is scaled by the in-sample seasonal-naive error (the
naive one for yearly data), as the M4 competition scores it. Measured results: docs/forecasting.md.

The recipe is the csv one (``lstm_jax.forecast.recipe``); here every series gives windows
to one model, each relative to its own level (log where the series is positive and doubles).
"""

from experiments.configs import base


def get_config():
    c = base.forecast(dataset="tsf:PATH")
    c.data.recipe = "ensemble"
    c.model.hidden_size = (64,)
    c.update({"epochs": 60, "patience": 10, "schedule": "cosine", "learning_rate": 3e-3, "batch_size": 64})
    return c
