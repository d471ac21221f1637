"""A config as a config file: the Python source of ``get_config()`` returning it, field for field.

The study writes each variant's best trial this way, so that ``python -m experiments.<name>
--config=FILE`` trains that trial again. Field types survive the trip: tuples stay tuples and an
unset field stays a typed placeholder that ``--config.FIELD=...`` can fill.
"""

from __future__ import annotations

import ml_collections

from lstm_jax.train.workdir import atomic_write


def _value(config: ml_collections.ConfigDict, key: str, indent: str) -> str:
    value = config[key]
    if isinstance(value, ml_collections.ConfigDict):
        return _dict(value, indent + "    ")
    if value is None:
        kind = config.get_type(key)
        return "None" if kind is type(None) else f"config_dict.placeholder({kind.__name__})"
    if isinstance(value, (bool, int, float, str, tuple, list)):
        return repr(value)
    raise TypeError(f"cannot write {key}={value!r} ({type(value).__name__}) into a config file")


def _dict(config: ml_collections.ConfigDict, indent: str) -> str:
    items = [f"{indent}    {key!r}: {_value(config, key, indent)}," for key in config.keys()]
    return "ml_collections.ConfigDict({\n" + "\n".join(items) + f"\n{indent}}})"


def source(config: ml_collections.ConfigDict, doc: str) -> str:
    """The text of a config file whose ``get_config()`` returns a copy of ``config``."""
    return (f'"""{doc.strip()}\n"""\n\nimport ml_collections\nfrom ml_collections import config_dict\n\n\n'
            f"def get_config():\n    return {_dict(config, '    ')}\n")


def write(path: str, config: ml_collections.ConfigDict, doc: str) -> None:
    atomic_write(path, source(config, doc))
