"""Ablation studies on Optuna (the ``study`` extra): the engine, the search space, the report.

``experiments.study`` is the front-end; ``lstm_jax.study.engine`` runs trials from any number of
workers on one storage, ``space`` reads the search space, ``report`` writes what a researcher
reads, ``configfile`` writes a trial back as a config file, and ``optuna_api`` is the one file that
touches Optuna. Importing ``lstm_jax`` does not import this package.
"""
