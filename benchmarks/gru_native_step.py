"""One GRU training step (forward, backward, Adam) side by side: torch.nn.GRU, lstm_jax.kernels.native.gru
and GRUCell's generic scan, interleaved in one process (each round runs each in turn, an untimed
call then a timed one, as benchmarks.benchmark does). Not a test: numbers, for docs/native_gru.md.

    PYTHONPATH=$PWD python benchmarks/gru_native_step.py [B T I H]

Model: the GRU layer, a linear head on the last output, MSE against a random target; x [B, T, I]
is not differentiated (a first layer). Env: TORCH_THREADS (default 2), ROUNDS (default 30).
"""

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from flax import nnx

from lstm_jax.kernels import native
from lstm_jax.kernels.native import gru as native_gru
from lstm_jax.nn.cells import GRUCell
from lstm_jax.nn.layers import scan_cell

B, T, I, H = (int(a) for a in sys.argv[1:5]) if len(sys.argv) > 4 else (64, 100, 8, 128)
ROUNDS = int(os.environ.get("ROUNDS", "30"))
torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))
rng = np.random.default_rng(0)
x_np = rng.normal(size=(B, T, I)).astype(np.float32)
y_np = rng.normal(size=(B,)).astype(np.float32)

torch.manual_seed(0)
gru = torch.nn.GRU(I, H, batch_first=True)
head = torch.nn.Linear(H, 1)
opt = torch.optim.Adam([*gru.parameters(), *head.parameters()], lr=1e-3)
xt, yt = torch.from_numpy(x_np), torch.from_numpy(y_np)


def torch_step():
    opt.zero_grad(set_to_none=True)
    out, _ = gru(xt)
    loss = torch.mean((head(out[:, -1])[:, 0] - yt) ** 2)
    loss.backward()
    opt.step()


cell = GRUCell(I, H, rngs=nnx.Rngs(0))
graphdef, state = nnx.split(cell)
params = {"W": cell.kernel[...], "U": cell.recurrent_kernel[...], "b": cell.bias[...],
          "bhn": cell.recurrent_bias[...], "hw": jnp.full((H, 1), 0.01), "hb": jnp.zeros((1,))}


def scan_layer(p, x_BxTxI):
    """What the layer's impl='scan' runs: cell.project, then scan_cell over GRUCell.step."""
    new = {"kernel": p["W"], "recurrent_kernel": p["U"], "bias": p["b"], "recurrent_bias": p["bhn"]}
    c = nnx.merge(graphdef, jax.tree_util.tree_map_with_path(lambda q, _: new[str(q[0].key)], state))
    _, out = scan_cell(c, c.project(x_BxTxI), (jnp.zeros((B, H)),), None)
    return out[:, -1]


def native_layer(p, x_BxTxI):
    _, out = native_gru.gru_layer(jnp.swapaxes(x_BxTxI, 0, 1), p["W"], p["U"], p["b"], p["bhn"], jnp.zeros((B, H)))
    return out[-1]


tx = optax.adam(1e-3)


def make(layer):
    def loss(p, x, y):
        return jnp.mean(((layer(p, x) @ p["hw"])[:, 0] + p["hb"][0] - y) ** 2)

    @jax.jit
    def step(p, s, x, y):
        u, s = tx.update(jax.grad(loss)(p, x, y), s, p)
        return optax.apply_updates(p, u), s

    held = {"p": params, "s": tx.init(params)}
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)

    def run():
        held["p"], held["s"] = step(held["p"], held["s"], x, y)
        jax.block_until_ready(held["p"])

    return run


calls = {"torch": torch_step, "native_gru": make(native_layer), "scan": make(scan_layer)}
for fn in calls.values():
    for _ in range(3):
        fn()
times = {k: [] for k in calls}
for _ in range(ROUNDS):
    for k, fn in calls.items():
        fn()
        t0 = time.perf_counter()
        fn()
        times[k].append(time.perf_counter() - t0)
med = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
for k, v in times.items():
    print(f"{k:11s} min {1e3 * min(v):7.2f}  median {med[k]:7.2f} ms  "
          f"p25 {1e3 * np.percentile(v, 25):7.2f}  p75 {1e3 * np.percentile(v, 75):7.2f}")
print(f"B={B} T={T} I={I} H={H} isa={native.isa()} native threads={native.threads()} "
      f"torch threads={torch.get_num_threads()} rounds={ROUNDS}")
print(f"medians: torch / native_gru = {med['torch'] / med['native_gru']:.2f}   "
      f"scan / native_gru = {med['scan'] / med['native_gru']:.2f}   scan / torch = {med['scan'] / med['torch']:.2f}")
