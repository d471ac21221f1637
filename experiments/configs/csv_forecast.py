"""The recipe for real series in a CSV file: multi-step forecasts of their last ``test_size`` values.

    python -m experiments.forecast --dataset=csv:../shared/data/forecast/elnino_monthly.csv --column=sst --test_size=36
    python -m experiments.forecast --dataset=csv:../shared/data/forecast/co2_weekly.csv --column=co2 --test_size=104
    python -m experiments.forecast --dataset=csv:../shared/data/forecast/nile_yearly.csv --column=volume --test_size=10
    python -m experiments.forecast --dataset=csv:../shared/data/forecast/uschange_quarterly.csv --column=Consumption \\
        --test_size=16 --season=4 --covariates=Income,Production,Savings,Unemployment

(a csv dataset without ``--config`` uses this file). Expected (seed 0, measured on 2 shared CPU cores): test MAPE
3.670% on El Niño against AutoARIMA's 3.772, the best statistical model (56 s wall);
0.086% on CO2 against AutoARIMA's 0.167 (131 s wall; the recent seasonal profile chosen on validation;
AutoARIMA's model search is approximated at seasons above 12, see lstm_jax.forecast.statistical); 13.29% on Nile
against AutoTheta's 12.77 (a loss; the best MASE, 0.839, though); uschange test MAE 0.306 alone, 0.228
with the covariates (univariate AutoARIMA 0.190). Each run also fits AutoETS, AutoTheta and
AutoARIMA (``pip install -e '.[baselines]'``) on the same training part and reports them beside
the LSTM and the naive forecasts. Measured results (seed 0, 2 shared CPU cores): docs/forecasting.md.

The recipe (``lstm_jax.forecast.recipe``): an ensemble of LSTMs over level-normalised
windows, per-series log / seasonal-profile / MASE scaling, direct multi-step outputs trained with
the pinball loss, early stopping on the validation span and a refit on the whole training part,
the median over look-backs and seeds. ``--id_column`` (and ``--time_column``) read a long-format
file and train one global model over every series; ``--covariates=A,B`` feeds past values of other
columns; ``--quantiles=0.1,0.5,0.9`` adds an interval. ``--recipe=transforms`` is the previous
recipe: one LSTM per transform chain (``lstm_jax.forecast.single``), the better on the
validation span kept. The automatic windows of both: ``lstm_jax.forecast.rules``.
"""

from experiments.configs import base


def get_config():
    c = base.forecast(dataset="csv:PATH")
    c.data.recipe = "ensemble"
    c.model.hidden_size = (64,)
    # For the ensemble; recipe=transforms was tuned with epochs 80, patience 12, learning rate 1e-3, batch 32.
    c.update({"epochs": 60, "patience": 10, "schedule": "cosine", "learning_rate": 3e-3, "batch_size": 64})
    return c
