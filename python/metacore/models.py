"""Dense feed-forward nets over a flat parameter vector θ.

Every model metacore trains is one kind of net: ``layer_sizes = [d, h_1, ..., h_m, k]``, an
activation between layers (relu or tanh) and a loss head on the k outputs:

- ``"mse"``: row loss ``mean_j (ŷ_j − y_j)²`` on raw outputs (k outputs, y of shape (n,) or (n, k));
- ``"logistic"``: one logit z, labels in {0, 1}, row loss ``log(1 + exp(−z))`` for y = 1 and
  ``log(1 + exp(z))`` for y = 0;
- ``"cross_entropy"``: k logits, integer labels 0..k−1, row loss ``−log softmax(z)[y]``.

θ layout (flat, stable): for each layer in order, W of shape (fan_out, fan_in) row-major, then b of
shape (fan_out,); with ``norm`` set, every hidden layer's b is followed by its scale γ and shift β
(fan_out each). With ``task_heads=T`` the hidden (trunk) layers come first, then task 0's output
layer (W, b), task 1's, ...: hard parameter sharing, task i uses the trunk and head i. With
``task_heads=T, head="bias"`` (bias-only heads) the output W is shared too and a head is only its
output bias: the trunk, the output W (k, h), then b_0 (k,), b_1, ..., b_{T−1} — one learned level
per task on a shared net, the per-group intercepts of a random-intercept (mixed) model (Laird &
Ware 1982) on a non-linear predictor. With one head both layouts are the same.

Normalised nets (``norm="batch"`` or ``"layer"``): each hidden layer is Linear → Norm → activation,
``h = γ ⊙ (z − μ) / √(σ² + ε) + β`` with ε = 1e-5 and no normalisation on the output layer.
Batch normalisation takes μ, σ² of each unit over the rows of the current forward pass (transductive
batch statistics, as the MAML paper's non-convolutional Omniglot net and learn2learn's OmniglotFC;
Ioffe & Szegedy 2015, without running averages); layer normalisation over the units of each row
(Ba, Kiros & Hinton 2016). With batch statistics a row's output depends on the other rows passed
with it: ``predict(θ, X)`` normalises over all of X; in meta-learning the inner loop's passes use the
support rows' statistics and the query pass the query rows' (MAML); a ProtoNet episode (support and
query rows) is one pass; in the multi-task objective a task's chosen rows are one pass, and so are
the ``batch_rows`` drawn from it in a step (at most 1024, else a ValueError). One row alone
normalises to 0 (h = β).
"""

from __future__ import annotations

import numpy as np

from . import _validation

ACTIVATIONS = ("relu", "tanh")
NORMS = ("batch", "layer")
HEADS = ("full", "bias")
from .data.taskset import LOSSES


class MLP:
    """A dense net ``layer_sizes[0] -> ... -> layer_sizes[-1]`` with a loss head.

    Parameters
    ----------
    layer_sizes : sequence of int
        Input width, hidden widths, output width; at least two entries, all >= 1.
    activation : {"relu", "tanh"}
        Applied after every hidden layer (never after the output layer).
    loss : {"mse", "logistic", "cross_entropy"}
        The loss head. "logistic" needs one output, "cross_entropy" at least two.
    task_heads : int or None
        If set to T, one output layer per task (tasks 0..T−1) after a shared trunk.
    head : {"full", "bias"}
        What a per-task head owns: ``"full"`` (default) a whole output layer (W, b); ``"bias"``
        only the output bias b, the output W being shared (one level per task; see the module
        docstring for the θ layout). ``"bias"`` needs ``task_heads``.
    norm : {"batch", "layer"} or None
        Normalise every hidden layer before its activation, with a learned scale γ and shift β per
        unit (see the module docstring for the statistics each pass uses). Default: none.

    Raises
    ------
    ValueError
        For sizes, an activation, loss, norm or head outside the choices above, a norm on a net
        without hidden layers (nothing to normalise), or ``head="bias"`` without ``task_heads``.
    """

    def __init__(self, layer_sizes, activation="relu", loss="mse", task_heads=None, norm=None,
                 head="full"):
        sizes = _validation.int_sequence("layer_sizes", layer_sizes, min_len=2, minimum=1)
        self.layer_sizes = tuple(sizes)
        self.activation = _validation.choice("activation", activation, ACTIVATIONS)
        self.loss = _validation.choice("loss", loss, LOSSES)
        if self.loss == "logistic" and sizes[-1] != 1:
            raise ValueError(f"loss='logistic' needs one output, got layer_sizes[-1]={sizes[-1]}")
        if self.loss == "cross_entropy" and sizes[-1] < 2:
            raise ValueError(
                f"loss='cross_entropy' needs at least 2 outputs, got layer_sizes[-1]={sizes[-1]}")
        self.task_heads = None if task_heads is None else _validation.integer(
            "task_heads", task_heads, minimum=1)
        self.norm = None if norm is None else _validation.choice("norm", norm, NORMS)
        if self.norm and len(sizes) < 3:   # the output layer is never normalised
            raise ValueError(f"norm={self.norm!r} normalises the hidden layers, but layer_sizes "
                             f"{list(sizes)} has none: add one (e.g. [{sizes[0]}, 40, "
                             f"{sizes[-1]}]) or leave norm=None")
        self.head = _validation.choice("head", head, HEADS)
        if self.head == "bias" and self.task_heads is None:
            raise ValueError("head='bias' (bias-only per-task heads) needs task_heads=T, got "
                             "task_heads=None")
        if self.n_params >= 2**63:  # θ is indexed with int64 in the core
            raise ValueError(f"layer_sizes {list(sizes)} (task_heads={task_heads}) give "
                             f"{self.n_params} parameters, more than 2^63 - 1")

    # --- shape facts ------------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        return self.layer_sizes[0]

    @property
    def n_outputs(self) -> int:
        return self.layer_sizes[-1]

    @property
    def n_layers(self) -> int:
        return len(self.layer_sizes) - 1

    @property
    def n_trunk_params(self) -> int:
        """Parameters of the hidden (shared) layers, their γ and β included."""
        s = self.layer_sizes
        extra = 2 if self.norm else 0
        return sum(s[l + 1] * s[l] + (1 + extra) * s[l + 1] for l in range(len(s) - 2))

    @property
    def n_head_params(self) -> int:
        """Parameters of one head: an output layer (W, b), or its k biases with head="bias"."""
        s = self.layer_sizes
        return s[-1] if self.head == "bias" else s[-1] * s[-2] + s[-1]

    @property
    def n_shared_params(self) -> int:
        """The leading entries of θ every task uses: the trunk, and the output W with
        head="bias"."""
        s = self.layer_sizes
        return self.n_trunk_params + (s[-1] * s[-2] if self.head == "bias" else 0)

    @property
    def n_params(self) -> int:
        return self.n_shared_params + self.n_head_params * (self.task_heads or 1)

    def layers(self, task=0):
        """[(W offset, (fan_out, fan_in), b offset), ...] of the layers task ``task`` uses."""
        s = self.layer_sizes
        out, off = [], 0
        for l in range(len(s) - 2):
            out.append((off, (s[l + 1], s[l]), off + s[l + 1] * s[l]))
            off += s[l + 1] * s[l] + (3 if self.norm else 1) * s[l + 1]
        if self.head == "bias":
            bias = self.n_shared_params + self.n_head_params * task
            out.append((off, (s[-1], s[-2]), bias))
            return out
        off += self.n_head_params * (task if self.task_heads else 0)
        out.append((off, (s[-1], s[-2]), off + s[-1] * s[-2]))
        return out

    def norm_layers(self):
        """[(γ offset, β offset, width), ...] of the normalised hidden layers ([] without norm)."""
        if not self.norm:
            return []
        return [(b + o, b + 2 * o, o) for _, (o, _), b in self.layers()[:-1]]

    def unpack_norms(self, theta):
        """Views [(γ, β), ...] into θ for the normalised hidden layers ([] without norm)."""
        return [(theta[g:g + o], theta[b:b + o]) for g, b, o in self.norm_layers()]

    def unpack(self, theta, task=0):
        """Views [(W, b), ...] into θ for the layers task ``task`` uses."""
        return [(theta[w:w + o * i].reshape(o, i), theta[b:b + o])
                for w, (o, i), b in self.layers(task)]

    # --- parameters and prediction ----------------------------------------------------------
    def init(self, seed=0, dtype=np.float64):
        """A fresh θ: He-normal weights for relu (std √(2/fan_in)), Glorot-uniform for tanh
        (±√(6/(fan_in+fan_out))), zero biases, γ = 1 and β = 0; every head drawn independently."""
        dtype = _validation.float_dtype("dtype", dtype)
        rng = np.random.default_rng(_validation.seed("seed", seed))
        _validation.fits_in_memory(f"θ of {self.n_params} parameters (layer_sizes "
                               f"{list(self.layer_sizes)})", self.n_params * 8)
        theta = np.zeros(self.n_params, dtype=np.float64)
        n_heads = self.task_heads or 1
        seen = set()
        for t in range(n_heads):
            for w, (o, i), _ in self.layers(t):
                if w in seen:
                    continue
                seen.add(w)
                if self.activation == "relu":
                    theta[w:w + o * i] = rng.normal(0.0, np.sqrt(2.0 / i), size=o * i)
                else:
                    r = np.sqrt(6.0 / (i + o))
                    theta[w:w + o * i] = rng.uniform(-r, r, size=o * i)
        for g, _, o in self.norm_layers():
            theta[g:g + o] = 1.0
        return theta.astype(dtype)

    def theta_from(self, source, theta):
        """θ of this model that computes, for every task, what ``source`` (another MLP of the
        same layer sizes and norm) computes with ``theta``: the trunk copied, each task's head
        set from the source's head for that task — the shared one when the source has one head,
        the shared output W and the task's own bias when it has bias-only heads. A start for
        richer heads: a pooled fit under per-task heads, bias-only heads (per-task
        intercepts) under full heads (each task's slopes then free to move from the shared
        ones). Returns a new array (n_params,), θ's dtype.

        ValueError when the source has other layer sizes or norm, or heads this model cannot
        express without losing something (per-task heads into one head, full heads into
        bias-only heads, a different number of tasks).
        """
        if not isinstance(source, MLP):
            raise TypeError(f"source must be a metacore MLP, got {type(source).__name__}")
        theta = _validation.theta("theta", theta, source.n_params)
        if (source.layer_sizes, source.norm, source.activation) != (
                self.layer_sizes, self.norm, self.activation):
            raise ValueError(f"source: layer sizes {list(source.layer_sizes)}, norm "
                             f"{source.norm!r} and activation {source.activation!r} differ from "
                             f"this model's {list(self.layer_sizes)}, {self.norm!r} and "
                             f"{self.activation!r}")
        src_heads, dst_heads = source.task_heads or 1, self.task_heads or 1
        shared_source = source.task_heads is None
        if not shared_source and (src_heads != dst_heads or
                                  (source.head == "full" and self.head == "bias")):
            raise ValueError(f"source: its heads (task_heads={source.task_heads}, head="
                             f"{source.head!r}) do not map onto this model's (task_heads="
                             f"{self.task_heads}, head={self.head!r}) without losing "
                             f"parameters")
        out = np.empty(self.n_params, dtype=theta.dtype)
        out[:self.n_trunk_params] = theta[:source.n_trunk_params]
        for t in range(dst_heads):
            (w_src, (o, i), b_src) = source.layers(0 if shared_source else t)[-1]
            (w_dst, _, b_dst) = self.layers(t)[-1]
            out[w_dst:w_dst + o * i] = theta[w_src:w_src + o * i]   # shared W written again
            out[b_dst:b_dst + o] = theta[b_src:b_src + o]
        return out

    def predict(self, theta, X, task=0, n_threads=None):
        """Outputs for rows X: (n,) for one output, (n, k) otherwise. Raw values for mse,
        logits for logistic and cross_entropy. ``task`` picks the head with per-task heads.
        With ``norm="batch"`` X is one forward pass: its rows share batch statistics."""
        theta = _validation.theta("theta", theta, self.n_params)
        X = _validation.float_array("X", X, ndim=2, dtype=theta.dtype)
        if X.shape[1] != self.n_features:
            raise ValueError(f"X must have {self.n_features} columns (the model's inputs), "
                             f"got shape {X.shape}")
        task = _validation.integer("task", task, minimum=0, maximum=(self.task_heads or 1) - 1)
        out = self.core_net().predict(theta, X, task, _validation.n_threads(n_threads))
        return out[:, 0] if self.n_outputs == 1 else out

    # --- plain data for the core and for persistence ----------------------------------------
    def core_net(self):
        """The compiled net this model describes (built once)."""
        net = self.__dict__.get("_compiled")
        if net is None:
            from . import _core
            net = _core.Net(list(self.layer_sizes), self.activation, self.loss,
                            self.task_heads or 1, self.norm, self.head)
            net = self.__dict__.setdefault("_compiled", net)   # racing threads share one
        return net

    def __getstate__(self):
        # the compiled net is a handle into this process: never pickled, rebuilt on first use
        state = dict(self.__dict__)
        state.pop("_compiled", None)
        return state

    def spec(self) -> dict:
        out = {"layer_sizes": list(self.layer_sizes), "activation": self.activation,
               "loss": self.loss, "task_heads": self.task_heads}
        if self.norm:   # absent for plain nets: specs saved before norm existed stay identical
            out["norm"] = self.norm
        if self.head != "full":   # likewise for specs saved before bias-only heads
            out["head"] = self.head
        return out

    @classmethod
    def from_spec(cls, spec: dict) -> "MLP":
        return cls(spec["layer_sizes"], activation=spec["activation"], loss=spec["loss"],
                   task_heads=spec.get("task_heads"), norm=spec.get("norm"),
                   head=spec.get("head", "full"))

    def __eq__(self, other):
        return isinstance(other, MLP) and self.spec() == other.spec()

    def __repr__(self):
        heads = f", task_heads={self.task_heads}" if self.task_heads else ""
        norm = f", norm={self.norm!r}" if self.norm else ""
        head = f", head={self.head!r}" if self.head != "full" else ""
        return (f"MLP({list(self.layer_sizes)}, activation={self.activation!r}, "
                f"loss={self.loss!r}{heads}{norm}{head})")


def Linear(d, k=1, task_heads=None, head="full"):
    """Linear regression (mse) on d features with k outputs: a net with no hidden layer.
    ``task_heads=T, head="bias"``: one shared W and an intercept per task."""
    return MLP([d, k], loss="mse", task_heads=task_heads, head=head)


def Logistic(d, task_heads=None):
    """Binary logistic regression on d features, labels in {0, 1}."""
    return MLP([d, 1], loss="logistic", task_heads=task_heads)


def Softmax(d, k, task_heads=None):
    """Multinomial (softmax) regression on d features and k classes."""
    return MLP([d, k], loss="cross_entropy", task_heads=task_heads)
