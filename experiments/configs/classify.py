"""The recipe for classification with any number of classes (``python -m experiments.classify``).

    python -m experiments.classify --dataset=ucr:ArrowHead --data_dir=../shared/data/multiclass

(every file dataset without ``--config`` uses this file). Expected on 2 CPU cores (seed 0), test
accuracy: ArrowHead 0.680, OSULeaf 0.636, BasicMotions 1.000, JapaneseVowels 0.992, mean 0.827
(1-NN DTW 0.805; FCN 0.938 on the three sets it has); docs/results.md has the table and the five-model
comparison. Wall time on 2 cores beside other jobs (load 3-4), start-up included: 102 s, 259 s,
71 s and 213 s.

    model     LSTM-FCN whose LSTM runs over time: LSTM(32) over the [T, D] series with lengths, its last
              valid output with dropout 0.2, beside Conv 64-8, 128-5, 64-3, each followed by the
              stateless 'global' normalisation and ReLU, then global average pooling; one Dense gives
              K logits (one sigmoid unit for K = 2). Softmax cross-entropy (optional label smoothing,
              class weights 'balanced').
    data      univariate series: each z-normalised on its own (the UCR convention); multivariate:
              each channel standardised with the training split's mean and std (per-series
              normalisation would erase the channel levels that tell, e.g., JapaneseVowels' speakers
              apart); 20% of the training set (stratified, seed) held out for validation; the test
              split is only ever scored. Varying lengths go through ``lengths``.
    training  Adam, batch 16, learning rate 1e-3 with a cosine decay to 0; an epoch has at least 256
              rows; the checkpoint with the best validation accuracy (ties: the latest) is scored on the test set.
    budget    each training row is seen work / (rows x length) times, clipped to [5, 1000].

``--compare=lstm,bilstm,fcn,lstm_fcn,lstm_fcn_time`` (any subset) trains each of those models as a
candidate in <workdir>/candidates/NAME and keeps the one with the best validation accuracy (ties: the
lower validation loss); see ``experiments.classify.MODELS`` for each one's settings.
"""

import ml_collections

from experiments.configs import base


def get_config():
    c = base.binary(dataset="ucr:ArrowHead")
    c.experiment = "classify"
    c.data = ml_collections.ConfigDict({
        "norm": "auto",  # auto | series | channel | none (auto: series if univariate, else channel)
        "val_fraction": 0.2,
        "min_epoch_rows": 256,
        "missing": "interpolate",  # values missing inside a series: interpolate (with a warning) | error
        "label_smoothing": 0.0,
        "class_weights": "none",  # none | balanced (N / (K n_k) on the training split)
    })
    c.model = base.model(architecture="lstm_fcn_time", hidden_size=(32,), dropout=0.2, conv_filters=(64, 128, 64))
    c.budget.work = 2.0e7
    # Up to 1000 passes: 300 left the smallest sets under-trained (ArrowHead's 29 training series got
    # 544 steps and ended at training accuracy 0.9). The work bound still caps every run's cost.
    c.budget.max_passes = 1000
    c.compare = ""  # comma-separated model names (experiments.classify.MODELS) chosen among on validation
    c.update({"epochs": 0, "batch_size": 16, "schedule": "cosine", "eval_batch_size": 0})
    return c
