"""The recipe for UCR-style classification data (``--dataset=ucr:NAME`` or ``npz:PATH``).

    python -m experiments.binary --dataset=ucr:ECG200 --data_dir=../shared/data/ucr

(a file dataset without ``--config`` uses this file). Expected on 2 CPU cores (seed 0): mean test
accuracy 0.875 over the seven binary sets in ../shared/data/ucr (1-NN DTW 0.815, FCN 0.892), each
run within 5 minutes; docs/results.md has the table.

    model     LSTM-FCN (Karim et al. 2017): LSTM(8) over the dimension-shuffled series with dropout
              0.8, beside Conv 64-8, 128-5, 64-3 (half the paper's widths), each followed by a
              stateless 'global' normalisation (per row over all steps and channels; the training
              loop carries no BatchNorm statistics) and ReLU, then global average pooling.
    data      each series z-normalised; 20% of the training set (stratified, seed) held out for
              validation; the archive's test split is only ever scored.
    training  Adam, batch 16, learning rate 1e-3 with a cosine decay to 0; an epoch has at least
              256 rows (small training sets are repeated within it); the checkpoint with the best
              validation accuracy (ties: the later one) is scored on the test set.
    budget    epochs = 0: each training row is seen work / (rows x length) times, clipped to
              [5, 300]: tiny sets train 300 passes, larger or longer ones as many as 2e7 row-steps
              allow, so that up to ~1000 training series finish within 5 minutes on 2 CPU cores.

Tuned on a few of the shared UCR sets for the general case (no per-dataset setting).
"""

from experiments.configs import base


def get_config():
    c = base.binary(dataset="ucr:ECG200")
    c.model = base.model(architecture="lstm_fcn", hidden_size=(8,), dropout=0.8, conv_filters=(64, 128, 64))
    c.data.znorm = True
    c.data.min_epoch_rows = 256
    c.budget.work = 2.0e7
    c.update({"epochs": 0, "batch_size": 16, "schedule": "cosine", "eval_batch_size": 0})
    return c
