"""The fields every configuration has. Config files start from these and change what differs.

Training fields sit at the top level (``config.epochs``), the network in ``config.model`` (read
into ``lstm_jax.ModelConfig``), the data in ``config.data``. ``model.hidden_size`` is a tuple with
one width per layer, or one width for every layer (``--config.model.hidden_size=64`` gives (64,)).
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def model(**overrides) -> ml_collections.ConfigDict:
    """The recurrent network (``lstm_jax.nn.models.ModelConfig``)."""
    m = ml_collections.ConfigDict({
        "architecture": "lstm",  # lstm | lstm_fcn
        "cell": "lstm",  # a registered cell (lstm_jax.nn.cells.CELLS)
        "hidden_size": (50,),
        "num_layers": 1,
        "bidirectional": False,
        "dropout": 0.0,  # between stacked layers (LSTM-FCN: after the LSTM branch)
        "input_dropout": 0.0,
        "recurrent_dropout": 0.0,
        "dropout_mode": "variational",  # variational | per_step
        "activation": "tanh",
        "pooling": "last",  # last | mean
        "unroll": config_dict.placeholder(int),  # lax.scan unroll; None: per backend
        "conv_filters": (128, 256, 128),  # LSTM-FCN's convolutions
        "conv_kernels": (8, 5, 3),
        "conv_norm": "global",
    })
    m.update(overrides)
    return m


def training(config: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
    """Adds the training fields (``lstm_jax.train.config.TrainConfig``) to ``config``, top level."""
    config.update({
        "epochs": 10,
        "batch_size": 32,
        "learning_rate": 1e-3,
        "seed": 0,  # the one seed of every random stream: parameters, dropout, shuffling
        "schedule": "constant",  # constant | cosine | warmup_cosine
        "warmup_epochs": 0,
        "clip_norm": 0.0,  # 0: no clipping
        "patience": 0,  # early stopping; 0: off
        "eval_batch_size": 512,  # 0: the validation set in one batch (rounded up to 16 rows, at most 512)
        "select": "val_loss",  # the validation metric that picks the checkpoint scored at the end
        "profile_steps": 0,  # > 0: a jax.profiler trace of this many training steps in the workdir
    })
    config.update(overrides)
    return config


def binary(**overrides) -> ml_collections.ConfigDict:
    """``experiments.binary``: LSTM(50) -> Dense(1) on the synthetic order task, 10 epochs."""
    c = ml_collections.ConfigDict()
    c.experiment = "binary"
    c.dataset = "synthetic"  # synthetic | ucr:NAME | npz:PATH
    c.data_dir = config_dict.placeholder(str)  # for ucr:NAME
    c.data = ml_collections.ConfigDict({
        "znorm": False,  # z-normalise each series (per channel, over its valid steps)
        "val_fraction": 0.2,  # share of the training set held out (stratified) for validation
        "min_epoch_rows": 0,  # repeat a small training set within an epoch up to this many rows
        "missing": "interpolate",  # ucr/npz: gaps inside a series: interpolate (with a warning) | error
    })
    # Epochs from a compute budget when ``epochs`` is 0: each training row is seen
    # work / (rows x length) times, clipped to [min_passes, max_passes].
    c.budget = ml_collections.ConfigDict({"work": 0.0, "min_passes": 5, "max_passes": 300})
    c.model = model()
    training(c, select="val_accuracy")
    return _replace(c, overrides)


def forecast(**overrides) -> ml_collections.ConfigDict:
    """``experiments.forecast``: the seed program, LSTM(50) -> Dense(1) on a scaled sine, 20 epochs."""
    c = ml_collections.ConfigDict()
    c.experiment = "forecast"
    c.dataset = "sine"  # sine | csv:PATH | tsf:PATH
    c.data = ml_collections.ConfigDict({
        "window": 0,  # input steps; 0: 50 for sine, automatic for csv/tsf (lstm_jax.forecast.rules)
        "val_fraction": 0.2,  # sine: the last share of the windows, unshuffled
        "column": "",  # csv: the column to forecast
        "date_column": "",  # csv: an optional column of dates, recorded beside the forecast
        "test_size": 0,  # csv: the last N values are the test, forecast multi-step
        "season": 0,  # csv: the seasonal period; 0: detected from the training part; 1: none
        "missing": "interpolate",  # csv: interpolate | error
        "transform": "auto",  # csv: auto, or a chain such as log,sdiff,standard
        "strategy": "direct",  # csv: direct | recursive
        "horizon": 0,  # csv, direct: values per model call; 0: the whole test span (capped)
        "val_size": 0,  # csv: values at the end of the training part for validation; 0: automatic
        "recipe": "transforms",  # csv: transforms (lstm_jax.forecast.single) | ensemble (lstm_jax.forecast.recipe)
        "id_column": "",  # long-format csv: the column naming each series (a global model over all of them)
        "time_column": "",  # long-format csv: the column that orders each series' rows
        "covariates": "",  # csv: other columns (comma-separated) whose past values feed the model
        "quantiles": "",  # e.g. 0.1,0.5,0.9: quantile outputs, pinball loss, interval coverage and width
        "statistical": True,  # the statistical references AutoETS, AutoTheta, AutoARIMA beside (needs statsforecast)
    })
    # The ensemble recipe (lstm_jax.forecast.recipe). Training fields and model.hidden_size
    # are the config's own; these say how many members and how each series is normalised.
    c.ensemble = ml_collections.ConfigDict({
        "input_multiples": (1.0, 1.5, 2.0),  # look-backs, in units of the base window
        "seeds": 2,  # members per look-back (seeds seed, seed + 1, ...)
        "budget": 200_000,  # at most this many window-steps (windows x input length) over all members
        "refit": True,  # retrain each member on all training windows for its chosen epochs
        "level": "auto",  # last | none | auto (naive vs mean stand-ins on the validation span)
        "log": "auto",  # auto (positive series that double) | yes | no
        "deseason": True,  # remove each series' seasonal profile (season > 1)
        # all (each phase's training mean) | recent (classical decomposition over the last
        # recent_seasons seasons) | auto (the first member fitted with each; lower validation MASE)
        "season_profile": "auto",
        "recent_seasons": 6,
    })
    c.model = model()
    training(c, epochs=20, select="val_loss")
    return _replace(c, overrides)


def _replace(config: ml_collections.ConfigDict, fields: dict) -> ml_collections.ConfigDict:
    """Sets each of ``fields`` whole (a sub-config given replaces the default one)."""
    for name, value in fields.items():
        if name not in config:
            raise KeyError(f"no config field {name!r}")
        config[name] = value
    return config
