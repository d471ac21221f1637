"""Experiment configurations: one file per seed program and recipe, each with ``get_config()``.

Run one with ``python -m experiments.<experiment> --config=experiments/configs/<file>.py`` and
override any field on the command line: ``--config.epochs=3 --config.model.hidden_size=64``.
"""
