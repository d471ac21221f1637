"""Recurrent cells (Flax NNX).

A cell is split in two so that the sequence layer can take the heavy part out of the scan:

* ``project(x_BxTxD) -> xp_BxTxG``: the input projection of every step at once, one large matmul.
* ``step(carry, xp_BxG) -> (carry, h_BxH)``: one step of the recurrence, run inside ``lax.scan``.
  It is ``combine(carry, xp, recurrent(h))``: one matmul ``recurrent`` (h U) and the elementwise
  rest, ``combine``. The fast path (``lstm_jax.kernels.xla``) relies on that split, so a cell
  changes ``update`` or ``combine``, not ``step`` or ``recurrent`` (it would then take the scan).

Fused weights keep their gate blocks in the order given by the class attribute ``gates``. For the
LSTM that is ``(i, f, o, g)``: the three sigmoid gates are contiguous, so one sigmoid covers them and
one tanh covers the candidate ``g``. Carries are tuples of ``[B, H]`` arrays, ``(c, h)`` for an LSTM.

A new ablation is a subclass that overrides only what differs, registered with ``@register("name")``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

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


CELLS: dict[str, type[RecurrentCell]] = {}


def register(name: str):
    """Class decorator: makes a cell available as ``cell=name`` everywhere."""

    def wrap(cls):
        if name in CELLS and CELLS[name] is not cls:
            raise ConfigError(f"cell name {name!r} is already registered to {CELLS[name].__name__}")
        CELLS[name] = cls
        cls.name = name
        return cls

    return wrap


def get_cell(cell: str | type[RecurrentCell]) -> type[RecurrentCell]:
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
        # Initialisers run in at least float32 (orthogonal's QR has no bf16 kernel), then cast.
        init_dtype = jnp.promote_types(param_dtype, jnp.float32)
        self.kernel = nnx.Param(jnp.concatenate(
            [kernel_init(k, (in_features, H), init_dtype) for k in k_in], axis=1).astype(param_dtype))
        self.recurrent_kernel = nnx.Param(jnp.concatenate(
            [recurrent_kernel_init(k, (H, H), init_dtype) for k in k_rec], axis=1).astype(param_dtype))
        self.bias = (nnx.Param(self.init_bias(bias_init(rngs.params(), (G * H,), init_dtype)).astype(param_dtype))
                     if use_bias else None)

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
        """The one matmul of a step, h U: [B, H] -> [B, G*H]. Linear in h (the fast path transposes it)."""
        h, u = self._cast(h_BxH, self.recurrent_kernel[...])
        return h @ u

    def combine(self, carry, xp_BxGH: Array, hu_BxGH: Array):
        """The elementwise rest of a step: (carry, projected input, h U) -> (new carry, output h [B, H]).

        By default z = xp + hU goes to ``update``. A cell whose pre-activations are not that sum
        (``gru``, ``layernorm``) overrides this instead of ``step``, so the fast path keeps it.
        """
        carry = self.update(carry, xp_BxGH + hu_BxGH.astype(xp_BxGH.dtype))
        return carry, self.output(carry)

    def step(self, carry, xp_BxGH: Array, h_mask_BxH: Array | None = None):
        """One step: (carry, projected input) -> (new carry, output h [B, H]).

        ``h_mask_BxH`` (recurrent dropout, already scaled) multiplies the h that enters the
        recurrent matmul; the carried state itself is never masked.
        """
        h = self.output(carry)
        if h_mask_BxH is not None:
            h = h * h_mask_BxH
        return self.combine(carry, xp_BxGH, self.recurrent(h))

    def __call__(self, carry, x_BxD: Array):
        """A single step from raw inputs, for use outside a sequence layer."""
        return self.step(carry, self.project(x_BxD))

    # -- what subclasses define ---------------------------------------------------------------------
    @property
    def carry_dtype(self):
        """The parameters' dtype, widened to at least float32: bf16 cells keep f32 state, f64 stays f64."""
        return jnp.promote_types(self.recurrent_kernel[...].dtype, jnp.float32)

    def initial_carry(self, batch_size: int, dtype=None):
        """Zero state for ``batch_size`` rows, in ``dtype`` (default ``carry_dtype``)."""
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

    def initial_carry(self, batch_size: int, dtype=None):
        z = jnp.zeros((batch_size, self.hidden_size), dtype or self.carry_dtype)
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


# -- Greff et al. 2017: the vanilla (peephole) LSTM and its one-change variants -----------------------


@register("peephole")
class PeepholeCell(LSTMCell):
    """The vanilla LSTM of Greff et al. 2017 ("LSTM: A Search Space Odyssey"): the LSTM with peepholes.

        z = x W + h U + b, blocks in order (i, f, o, g)
        i = σ(z_i + p_i ⊙ c)
        f = σ(z_f + p_f ⊙ c)
        g = act(z_g)
        c' = f ⊙ c + i ⊙ g
        o = σ(z_o + p_o ⊙ c')          the output gate looks at the new cell state
        h' = o ⊙ act(c')

    The peepholes p_i, p_f, p_o are diagonal ([H] vectors) and start at zero, so the untrained cell
    is the plain LSTM. Greff's variants below each change one piece of this: a gate left out of
    ``gates`` is the constant 1 and has neither a weight block nor a peephole. Carry is (c, h).
    """

    def __init__(self, in_features: int, hidden_size: int, *, rngs: nnx.Rngs, **kwargs):
        super().__init__(in_features, hidden_size, rngs=rngs, **kwargs)
        dtype = self.kernel[...].dtype
        for gate in ("i", "f", "o"):
            setattr(self, f"p_{gate}", nnx.Param(jnp.zeros((hidden_size,), dtype)) if gate in self.gates else None)

    # The pieces the variants override.
    def gate(self, z_BxGH: Array, name: str, c_BxH: Array) -> Array:
        """σ(z_name + p_name ⊙ c), or 1 for a gate this cell does not have."""
        if name not in self.gates:
            return jnp.ones_like(c_BxH)
        return self.recurrent_activation(z_BxGH[..., self.gate_slice(name)] + getattr(self, f"p_{name}")[...] * c_BxH)

    def forget_gate(self, z_BxGH: Array, c_BxH: Array, i_BxH: Array) -> Array:
        return self.gate(z_BxGH, "f", c_BxH)

    def candidate(self, z_BxGH: Array) -> Array:
        """The input activation g."""
        return self.activation(z_BxGH[..., self.gate_slice("g")])

    def squash(self, c_BxH: Array) -> Array:
        """The output activation applied to the cell state."""
        return self.activation(c_BxH)

    def cell_step(self, c_BxH: Array, z_BxGH: Array):
        """(c, z) -> (c', h', (i, f, o)), all in the carry's dtype (scan needs it to stay put)."""
        dtype = c_BxH.dtype
        z = z_BxGH.astype(dtype)
        i = self.gate(z, "i", c_BxH)
        f = self.forget_gate(z, c_BxH, i)
        c = (f * c_BxH + i * self.candidate(z)).astype(dtype)
        o = self.gate(z, "o", c)
        return c, (o * self.squash(c)).astype(dtype), tuple(a.astype(dtype) for a in (i, f, o))

    def update(self, carry, z_BxGH: Array):
        c, h, _ = self.cell_step(carry[0], z_BxGH)
        return c, h


@register("np")
class NPCell(LSTMCell):
    """Greff's NP, no peepholes: the standard ``lstm`` under Greff's name, so his eight variants
    can be listed together (it takes the same native kernels as ``lstm``, not cuDNN)."""


@register("nig")
class NIGCell(PeepholeCell):
    """Greff's NIG, no input gate: i = 1, so c' = f ⊙ c + g. Blocks (f, o, g); peepholes p_f, p_o."""

    gates = ("f", "o", "g")


@register("nfg")
class NFGCell(PeepholeCell):
    """Greff's NFG, no forget gate: f = 1, so c' = c + i ⊙ g. Blocks (i, o, g); peepholes p_i, p_o."""

    gates = ("i", "o", "g")


@register("nog")
class NOGCell(PeepholeCell):
    """Greff's NOG, no output gate: o = 1, so h' = act(c'). Blocks (i, f, g); peepholes p_i, p_f."""

    gates = ("i", "f", "g")


@register("niaf")
class NIAFCell(PeepholeCell):
    """Greff's NIAF, no input activation: g = z_g (linear), so c' = f ⊙ c + i ⊙ z_g."""

    def candidate(self, z_BxGH: Array) -> Array:
        return z_BxGH[..., self.gate_slice("g")]


@register("noaf")
class NOAFCell(PeepholeCell):
    """Greff's NOAF, no output activation: h' = o ⊙ c'."""

    def squash(self, c_BxH: Array) -> Array:
        return c_BxH


@register("cifg")
class CIFGCell(PeepholeCell):
    """Greff's CIFG, coupled input and forget gate: f = 1 − i, so c' = (1 − i) ⊙ c + i ⊙ g.

    Blocks (i, o, g); peepholes p_i, p_o. An open forget gate at the start means a half-shut input
    gate, so ``forget_bias`` is subtracted from b_i instead of added to a b_f that does not exist.
    """

    gates = ("i", "o", "g")

    def init_bias(self, bias_G_H: Array) -> Array:
        return bias_G_H.at[self.gate_slice("i")].add(-self.forget_bias)

    def forget_gate(self, z_BxGH: Array, c_BxH: Array, i_BxH: Array) -> Array:
        return 1.0 - i_BxH


@register("fgr")
class FGRCell(PeepholeCell):
    """Greff's FGR, full gate recurrence: the gates also read all three gates of the previous step.

        [ẑ_i ẑ_f ẑ_o] = [z_i z_f z_o] + [i f o]_{t-1} R       R [3H, 3H]: the 9 matrices R_ab, a, b ∈ {i, f, o}
        then as ``peephole`` with ẑ in place of z

    Carry is (c, h, a) with a = [i f o] of the previous step [B, 3H], zero before the first step.
    R starts at zero (the untrained cell is the peephole LSTM): previous gates are all positive, so a
    random R would shift every gate by a large common offset.
    """

    def __init__(self, in_features: int, hidden_size: int, *, rngs: nnx.Rngs, **kwargs):
        super().__init__(in_features, hidden_size, rngs=rngs, **kwargs)
        H = hidden_size
        self.gate_recurrent_kernel = nnx.Param(jnp.zeros((3 * H, 3 * H), self.kernel[...].dtype))

    def initial_carry(self, batch_size: int, dtype=None):
        c, h = super().initial_carry(batch_size, dtype)
        return c, h, jnp.zeros((batch_size, 3 * self.hidden_size), c.dtype)

    def update(self, carry, z_BxGH: Array):
        c, _, a = carry
        H3 = 3 * self.hidden_size
        z = z_BxGH.astype(c.dtype)
        z = jnp.concatenate([z[..., :H3] + a @ self.gate_recurrent_kernel[...].astype(c.dtype), z[..., H3:]], axis=-1)
        c, h, gates = self.cell_step(c, z)
        return c, h, jnp.concatenate(gates, axis=-1)


# -- other families ---------------------------------------------------------------------------------


@register("layernorm")
class LayerNormLSTMCell(LSTMCell):
    """The layer-normalised LSTM of Ba, Kiros & Hinton 2016, each gate block normalised on its own.

        z = LN(x W; α_x) + LN(h U; α_h) + b       LN over each [H] gate block, blocks (i, f, o, g)
        i, f, o, g and c' as in ``lstm``
        h' = o ⊙ act(LN(c'; α_c) + β_c)

    LN(v; α) = α ⊙ (v − mean(v)) / sqrt(var(v) + 1e-5). The shifts of the two gate LNs would only
    add to b, so b (which carries the forget bias) stands in for both. Gains α_x, α_h [4H] and
    α_c [H] start at 1, β_c [H] at 0. Statistics are taken in float32 at least.
    """

    eps: ClassVar[float] = 1e-5

    def __init__(self, in_features: int, hidden_size: int, *, rngs: nnx.Rngs, **kwargs):
        super().__init__(in_features, hidden_size, rngs=rngs, **kwargs)
        dtype, GH = self.kernel[...].dtype, self.num_gates * hidden_size
        self.gain_x = nnx.Param(jnp.ones((GH,), dtype))
        self.gain_h = nnx.Param(jnp.ones((GH,), dtype))
        self.gain_c = nnx.Param(jnp.ones((hidden_size,), dtype))
        self.shift_c = nnx.Param(jnp.zeros((hidden_size,), dtype))

    def normalize(self, v_Bx_: Array, blocks: int) -> Array:
        """Zero mean, unit variance over each of ``blocks`` equal blocks of the last axis."""
        shape = v_Bx_.shape
        v = v_Bx_.astype(jnp.promote_types(v_Bx_.dtype, jnp.float32)).reshape(shape[:-1] + (blocks, shape[-1] // blocks))
        v = (v - v.mean(-1, keepdims=True)) * jax.lax.rsqrt(v.var(-1, keepdims=True) + self.eps)
        return v.reshape(shape)

    def project(self, x_BxTxD: Array) -> Array:
        x, w = self._cast(x_BxTxD, self.kernel[...])
        xp = self.normalize(x @ w, self.num_gates) * self.gain_x[...]
        if self.bias is not None:
            xp = xp + self.bias[...]
        return xp

    def combine(self, carry, xp_BxGH: Array, hu_BxGH: Array):
        return super().combine(carry, xp_BxGH, self.normalize(hu_BxGH, self.num_gates) * self.gain_h[...])

    def update(self, carry, z_BxGH: Array):
        c, _ = carry
        i, f, o, g = self.split_gates(z_BxGH.astype(c.dtype))
        c = (f * c + i * g).astype(c.dtype)
        h = o * self.activation(self.normalize(c, 1) * self.gain_c[...] + self.shift_c[...])
        return c, h.astype(c.dtype)


@register("gru")
class GRUCell(RecurrentCell):
    """The gated recurrent unit (Cho et al. 2014) in PyTorch's convention, the usual comparison.

        r = σ(x W_r + h U_r + b_r)            blocks in order (r, z, n)
        z = σ(x W_z + h U_z + b_z)
        n = act(x W_n + b_n + r ⊙ (h U_n + b_hn))
        h' = (1 − z) ⊙ n + z ⊙ h

    The reset gate scales only the recurrent part of n, so that part keeps its own bias b_hn [H]
    (b_r and b_z absorb their recurrent twins), and ``combine`` is its own. Carry is (h,).
    """

    gates = ("r", "z", "n")

    def __init__(self, in_features: int, hidden_size: int, *, rngs: nnx.Rngs, **kwargs):
        super().__init__(in_features, hidden_size, rngs=rngs, **kwargs)
        has_bias = self.bias is not None
        self.recurrent_bias = nnx.Param(jnp.zeros((hidden_size,), self.kernel[...].dtype)) if has_bias else None

    def initial_carry(self, batch_size: int, dtype=None):
        return (jnp.zeros((batch_size, self.hidden_size), dtype or self.carry_dtype),)

    def output(self, carry) -> Array:
        return carry[0]

    def combine(self, carry, xp_BxGH: Array, hu_BxGH: Array):
        (h,) = carry
        H2 = 2 * self.hidden_size
        xp = xp_BxGH.astype(h.dtype)
        hu = hu_BxGH.astype(h.dtype)
        r, z = jnp.split(self.recurrent_activation(xp[..., :H2] + hu[..., :H2]), 2, axis=-1)
        hn = hu[..., H2:] if self.recurrent_bias is None else hu[..., H2:] + self.recurrent_bias[...]
        n = self.activation(xp[..., H2:] + r * hn)
        h = ((1.0 - z) * n + z * h).astype(h.dtype)
        return (h,), h
