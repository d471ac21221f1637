"""A first study: lstm, gru and cifg on the synthetic order task, each tuned by 4 random-search trials.

    python -m experiments.study --config=experiments/configs/studies/quick.py --workdir=runs/quick

Expected on 2 CPU cores: about 1 minute (12 trials in two workers of one core each; 63 s at
0d9cc86); each variant's best trial at 0.998-1.0 validation and 0.99-1.0 test accuracy. With 4
trials a variant's best 10% is one trial, so the report shows the differences but cannot test
them (greff.py can). ``runs/quick/report.md`` holds the tables and pictures, and
``runs/quick/best/synthetic-<variant>.py`` each variant's best trial as a config that trains again.
"""

import ml_collections

from experiments.configs import basic


def get_config():
    c = ml_collections.ConfigDict()
    c.name = ""  # the study's name in its storage; "" is the file's name (quick)
    c.base = basic.get_config()  # the experiment every trial runs: experiments.binary, LSTM(50), 10 epochs
    c.datasets = ""  # comma-separated; "" is base.dataset (synthetic)
    c.dataset_fields = ml_collections.ConfigDict()  # dataset -> "field=value; ..." set for it alone
    c.variants = "lstm,gru,cifg"  # registered cells, or names in variant_fields
    c.variant_fields = ml_collections.ConfigDict()  # name -> "field=value; ..." for a variant that is not a cell
    c.baseline = "lstm"  # the variant every other is tested against in the report
    c.trials_per_variant = 4  # finished trials per (dataset, variant)
    # One text per hyperparameter (lstm_jax.study.space); names are the experiment's short flags.
    c.space = ml_collections.ConfigDict({
        "learning_rate": "loguniform(3e-4, 3e-2)",
        "hidden_size": "logint(16, 64)",
    })
    c.sampler = "random"  # random (a Greff-style analysis) | tpe (tuning)
    c.pruner = "none"  # none | median | hyperband
    c.seeds = 1  # training runs per trial (their mean validation metric is the trial's value)
    c.metric = ""  # the validation metric trials are ranked on; "" is base.select (val_accuracy)
    c.heartbeat_seconds = 10  # a trial silent for 3 beats (a killed worker) is failed and run again
    return c
