"""Every registered cell at one fixed set of hyperparameters, over 3 seeds: the plain ablation grid.

    python -m experiments.study --config=experiments/configs/studies/cells.py --workdir=runs/cells

No search (an empty space): each cell's 3 trials differ only in their seed (0, 1, 2), and the
report compares every cell with lstm over all of them. LSTM(50), 10 epochs, batch 32, on the
synthetic task and ECG200 (z-normalised). Expected on 2 CPU cores: about 3 minutes (157 s at
0d9cc86); the results are docs/results.md's "Cells" table. For cells compared at their own tuned
hyperparameters, which is what a claim about a variant needs, see greff.py.
"""

import ml_collections

from experiments.configs import basic
from experiments.configs.studies import greff
from lstm_jax.nn.cells import CELLS


def get_config():
    c = greff.get_config()
    c.base = basic.get_config()
    c.dataset_fields = ml_collections.ConfigDict({"ucr-ECG200": f"data_dir={str(greff.UCR)!r}; data.znorm=True"})
    c.variants = ",".join(sorted(CELLS))  # the built-in cells (lstm_jax.nn.cells)
    c.trials_per_variant = 3
    c.space = ml_collections.ConfigDict()
    return c
