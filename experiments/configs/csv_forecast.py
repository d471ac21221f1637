"""The recipe for a real series in a CSV file: multi-step forecasts of its last ``test_size`` values.

    python -m experiments.forecast --dataset=csv:../shared/data/forecast/elnino_monthly.csv --column=sst --test_size=36
    python -m experiments.forecast --dataset=csv:../shared/data/forecast/co2_weekly.csv --column=co2 --test_size=104

(a csv dataset without ``--config`` uses this file). Expected on 2 CPU cores (seed 0, about a
minute each): test MAPE 3.66% on El Niño (seasonal naive 5.78) and 0.172% on CO2 (0.506).

The season is detected from the training part; one undifferenced and one differenced transform
chain (``lstm_jax.series.transform_candidates``) each train an LSTM, and the one that forecasts the
validation span (the end of the training part) better is kept, by MAPE in original units (by MAE
where a zero value leaves MAPE undefined). Forecasts are direct: one model call emits the whole
test span (MIMO), which does not compound its own errors the way feeding back one step at a time
does; a span too long for that goes block by block. Short series repeat their windows within an
epoch so that an epoch has at least 20 steps. For series of ~100 to a few thousand values.
"""

from experiments.configs import base


def get_config():
    c = base.forecast(dataset="csv:PATH")
    c.model.hidden_size = (64,)
    c.update({"epochs": 80, "patience": 12, "schedule": "cosine"})
    return c
