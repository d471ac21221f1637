"""Recurrent cells (Flax NNX).

A cell is split in two so that the sequence layer can take the heavy part out of the scan:

* ``project(x_BxTxD) -> xp_BxTxG``: the input projection of every step at once, one large matmul.
* ``step(carry, xp_BxG) -> (carry, h_BxH)``: one step of the recurrence, run inside ``lax.scan``.

Fused weights keep their gate blocks in the order given by the class attribute ``gates``. For the
LSTM that is ``(i, f, o, g)``: the three sigmoid gates are contiguous, so one sigmoid covers them and
one tanh covers the candidate ``g``. Carries are tuples of ``[B, H]`` arrays, ``(c, h)`` for an LSTM.

A new ablation is a subclass that overrides only what differs, registered with ``@register("name")``.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from lstm_jax.errors import ConfigError

Array = jax.Array
Initializer = Callable[..., Array]

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "hard_sigmoid": jax.nn.hard_sigmoid,
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "softsign": jax.nn.soft_sign,
    "linear": lambda x: x,
}


def get_activation(name_or_fn: str | Callable[[Array], Array]) -> Callable[[Array], Array]:
    """Looks an activation up by name; a callable passes through."""
    if callable(name_or_fn):
        return name_or_fn
    try:
        return ACTIVATIONS[name_or_fn]
    except KeyError:
        raise ConfigError(
            f"unknown activation {name_or_fn!r}; choose one of {', '.join(sorted(ACTIVATIONS))}"
        ) from None


CELLS: dict[str, type["RecurrentCell"]] = {}


def register(name: str):
    """Class decorator: makes a cell available as ``cell=name`` everywhere."""

    def wrap(cls):
        if name in CELLS and CELLS[name] is not cls:
            raise ConfigError(f"cell name {name!r} is already registered to {CELLS[name].__name__}")
        CELLS[name] = cls
        cls.name = name
        return cls

    return wrap


def get_cell(cell: str | type["RecurrentCell"]) -> type["RecurrentCell"]:
    """Resolves a registered name (or passes a cell class through)."""
    if isinstance(cell, type) and issubclass(cell, RecurrentCell):
        return cell
    try:
        return CELLS[cell]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown cell {cell!r}; registered cells: {', '.join(sorted(CELLS))}") from None


class RecurrentCell(nnx.Module):
    """Base of all cells: fused input kernel [D, G*H], recurrent kernel [H, G*H], one bias [G*H].

    Subclasses set ``gates`` and implement ``update(carry, z_BxGH) -> carry`` and ``output(carry)``.
    """

    gates: ClassVar[tuple[str, ...]] = ()
    name: ClassVar[str] = ""

    def __init__(
        self,
        in_features: int,
        hidden_size: int,
        *,
        activation: str | Callable = "tanh",
        recurrent_activation: str | Callable = "sigmoid",
        forget_bias: float = 1.0,
        use_bias: bool = True,
        kernel_init: Initializer = nnx.initializers.glorot_uniform(),
        recurrent_kernel_init: Initializer = nnx.initializers.orthogonal(),
        bias_init: Initializer = nnx.initializers.zeros_init(),
        param_dtype=jnp.float32,
        dtype=None,
        rngs: nnx.Rngs,
    ):
        if in_features <= 0 or hidden_size <= 0:
            raise ConfigError(
                f"a cell needs in_features > 0 and hidden_size > 0, got {in_features} and {hidden_size}"
            )
        self.in_features = in_features
        self.hidden_size = hidden_size
        self.activation = get_activation(activation)
        self.recurrent_activation = get_activation(recurrent_activation)
        self.forget_bias = forget_bias
        self.dtype = dtype
        G, H = len(self.gates), hidden_size
        # Each gate block of the input kernel is initialised on its own [D, H] fan, as Keras does
        # for its fused kernel, so the init does not depend on the number of gates.
        k_in = jax.random.split(rngs.params(), G)
        k_rec = jax.random.split(rngs.params(), G)
        self.kernel = nnx.Param(
            jnp.concatenate([kernel_init(k, (in_features, H), param_dtype) for k in k_in], axis=1)
        )
        self.recurrent_kernel = nnx.Param(
            jnp.concatenate([recurrent_kernel_init(k, (H, H), param_dtype) for k in k_rec], axis=1)
        )
        self.bias = nnx.Param(self.init_bias(bias_init(rngs.params(), (G * H,), param_dtype))) if use_bias else None

    # -- layout -------------------------------------------------------------------------------------
    @property
    def num_gates(self) -> int:
        return len(self.gates)

    def gate_slice(self, gate: str) -> slice:
        """Where a gate's block sits in the fused G*H axis."""
        k = self.gates.index(gate)
        return slice(k * self.hidden_size, (k + 1) * self.hidden_size)

    def init_bias(self, bias_G_H: Array) -> Array:
        if "f" in self.gates:
            bias_G_H = bias_G_H.at[self.gate_slice("f")].add(self.forget_bias)
        return bias_G_H

    def _cast(self, *xs):
        if self.dtype is None:
            return xs
        return tuple(x.astype(self.dtype) for x in xs)

    # -- the two halves -----------------------------------------------------------------------------
    def project(self, x_BxTxD: Array) -> Array:
        """Input projection for all steps: [..., D] -> [..., G*H]."""
        x, w = self._cast(x_BxTxD, self.kernel[...])
        xp = x @ w
        if self.bias is not None:
            xp = xp + self.bias[...].astype(xp.dtype)
        return xp

    def recurrent(self, h_BxH: Array) -> Array:
        h, u = self._cast(h_BxH, self.recurrent_kernel[...])
        return h @ u

    def step(self, carry, xp_BxGH: Array):
        """One step: (carry, projected input) -> (new carry, output h [B, H])."""
        z = xp_BxGH + self.recurrent(self.output(carry)).astype(xp_BxGH.dtype)
        carry = self.update(carry, z)
        return carry, self.output(carry)

    def __call__(self, carry, x_BxD: Array):
        """A single step from raw inputs, for use outside a sequence layer."""
        return self.step(carry, self.project(x_BxD))

    # -- what subclasses define ---------------------------------------------------------------------
    def initial_carry(self, batch_size: int, dtype=jnp.float32):
        raise NotImplementedError

    def update(self, carry, z_BxGH: Array):
        raise NotImplementedError

    def output(self, carry) -> Array:
        raise NotImplementedError


@register("lstm")
class LSTMCell(RecurrentCell):
    """The standard LSTM without peepholes (Hochreiter & Schmidhuber 1997; Gers et al. 2000).

        i, f, o = σ(z_i), σ(z_f), σ(z_o)        z = x W + h U + b, blocks in order (i, f, o, g)
        g = act(z_g)
        c' = f ⊙ c + i ⊙ g
        h' = o ⊙ act(c')

    ``act`` is ``activation`` (tanh by default; the Keras seed programs use relu) and σ is
    ``recurrent_activation``. The forget-gate bias starts at ``forget_bias`` (1.0, Jozefowicz et
    al. 2015). Carry is ``(c, h)``, each [B, H]; c stays in float32 whatever ``dtype`` computes in.
    """

    gates = ("i", "f", "o", "g")

    def initial_carry(self, batch_size: int, dtype=jnp.float32):
        z = jnp.zeros((batch_size, self.hidden_size), dtype)
        return (z, z)

    def output(self, carry) -> Array:
        return carry[1]

    def split_gates(self, z_BxGH: Array):
        """Pre-activations -> (i, f, o, g), activated."""
        H = self.hidden_size
        ifo = self.recurrent_activation(z_BxGH[..., : 3 * H])
        g = self.activation(z_BxGH[..., 3 * H :])
        return ifo[..., :H], ifo[..., H : 2 * H], ifo[..., 2 * H :], g

    def update(self, carry, z_BxGH: Array):
        c, _ = carry
        i, f, o, g = self.split_gates(z_BxGH)
        c = f.astype(c.dtype) * c + (i * g).astype(c.dtype)
        h = o * self.activation(c).astype(o.dtype)
        return c, h.astype(c.dtype)
