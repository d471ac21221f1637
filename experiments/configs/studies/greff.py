"""A Greff-style ablation ("LSTM: A Search Space Odyssey", 2017) at this machine's scale.

    python -m experiments.study --config=experiments/configs/studies/greff.py --workdir=runs/greff

Seven variants (lstm; the paper's vanilla LSTM, peephole; and its nfg, noaf, nig, cifg, np), two
datasets of different kinds (the synthetic order task; ECG200, a real UCR series set,
z-normalised), 30 random-search trials per variant and dataset (420 trials; the best 10% by
validation hold 3), over Adam's learning rate, the hidden size, the batch size and input dropout
(our stand-in for the paper's input noise). Expected on 2 CPU cores: about 25 minutes in two
one-core workers. The results and their comparison with the paper: docs/ablation.md.
"""

import pathlib

import ml_collections

from experiments.configs import basic

UCR = pathlib.Path(__file__).resolve().parents[3].parent / "shared" / "data" / "ucr"


def get_config():
    c = ml_collections.ConfigDict()
    c.name = ""
    c.base = basic.get_config()  # experiments.binary: one recurrent layer -> Dense(1), 10 epochs
    c.datasets = "synthetic,ucr:ECG200"
    c.dataset_fields = ml_collections.ConfigDict({
        # 80 training series of 96 steps: 3 steps an epoch, so more epochs than the synthetic task's 20.
        "ucr-ECG200": f"data_dir={str(UCR)!r}; data.znorm=True; epochs=30",
    })
    c.variants = "lstm,peephole,nfg,noaf,nig,cifg,np"
    c.variant_fields = ml_collections.ConfigDict()
    c.baseline = "lstm"  # the variant every other is tested against in the report
    c.trials_per_variant = 30
    c.space = ml_collections.ConfigDict({
        "learning_rate": "loguniform(1e-4, 1e-1)",
        "hidden_size": "logint(8, 128)",
        "batch_size": "choice(16, 32, 64)",
        "input_dropout": "uniform(0.0, 0.5)",
    })
    c.sampler = "random"
    c.pruner = "none"
    c.seeds = 1
    c.metric = ""  # base.select: val_accuracy
    c.heartbeat_seconds = 10
    return c
