"""A softmax classifier whose every prediction is restricted to one group's classes (a chatbot's response set),
in training as at prediction time: linear (``hidden=0``) or with one ReLU hidden layer.

One model over every chatbot learns from all of them (shared labels, shared words), but the softmax of a row only
runs over the labels its chatbot can answer, so the loss is the one the copilot is judged by: tell apart this
chatbot's replies, not every reply of every chatbot. A one-vs-rest or plain multinomial model spends its capacity
separating labels that never compete. Trained with Adam on minibatches of the sparse feature matrix (torch, CPU);
the fitted weights are kept as numpy arrays, so prediction (and unpickling in the server) needs only numpy/scipy.
The first layer's weights (features x hidden, the bulk of the model) are rounded to float16 once fitted and pickled
as such: half the size of the exported model, and the unpickled model computes exactly what the fitted one did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


class MaskedSoftmax:
    """Fit ``X`` (rows), ``y`` (labels) and ``groups`` (the group of each row) with ``allowed[group]`` the labels
    a row of that group may take; ``predict_proba(X, groups)`` gives probabilities over ``classes_`` that are 0
    outside each row's group and sum to 1 inside it.

    Settings: ``hidden`` units (0: linear softmax), ``epochs`` (passes over the rows: small data needs more),
    ``lr`` (Adam), ``batch_size``, ``dropout`` on the hidden layer, ``seed`` (initial weights and the order of the
    minibatches).
    """

    def __init__(self, hidden: int = 256, epochs: int = 4, lr: float = 0.002, batch_size: int = 256,
                 dropout: float = 0.5, seed: int = 0):
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.dropout = dropout
        self.seed = seed

    def fit(self, x: Any, y: Sequence[str], groups: Sequence[str],
            allowed: Mapping[str, Sequence[str]]) -> MaskedSoftmax:
        import torch  # only to train: a fitted model predicts, and unpickles in the server, without torch

        classes = sorted(set(y) | {label for labels in allowed.values() for label in labels})
        index = {c: i for i, c in enumerate(classes)}
        self.classes_ = np.array(classes)
        self.groups_ = {g: i for i, g in enumerate(sorted(set(allowed) | set(groups)))}
        masks = np.zeros((len(self.groups_), len(classes)), dtype=bool)
        for group, labels in allowed.items():
            masks[self.groups_[group], [index[label] for label in labels]] = True
        targets = np.array([index[label] for label in y])
        rows = np.array([self.groups_[g] for g in groups])
        masks[rows, targets] = True  # a recorded label is always a possible answer of its own group
        self.masks_ = masks

        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        n_features, n_classes = x.shape[1], len(classes)
        if self.hidden > 0:
            w1 = torch.nn.Parameter(torch.randn(n_features, self.hidden) * 0.01)
            b1 = torch.nn.Parameter(torch.zeros(self.hidden))
            out = torch.nn.Linear(self.hidden, n_classes)
            params = [w1, b1, *out.parameters()]
        else:
            w1 = torch.nn.Parameter(torch.zeros(n_features, n_classes))
            b1 = torch.nn.Parameter(torch.zeros(n_classes))
            params = [w1, b1]
        optimiser = torch.optim.Adam(params, lr=self.lr)
        dropout = torch.nn.Dropout(self.dropout)
        x = x.tocsr()
        y_t, masks_t, rows_t = torch.from_numpy(targets), torch.from_numpy(masks), torch.from_numpy(rows)
        for _ in range(self.epochs):
            order = rng.permutation(x.shape[0])
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                logits = torch.sparse.mm(_torch_sparse(x[batch]), w1) + b1
                if self.hidden > 0:
                    logits = out(dropout(torch.relu(logits)))
                logits = logits.masked_fill(~masks_t[rows_t[batch]], -1e9)
                loss = torch.nn.functional.cross_entropy(logits, y_t[batch])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
        self.w1_ = w1.detach().numpy().astype(np.float16).astype(np.float32)
        self.b1_ = b1.detach().numpy().copy()
        if self.hidden > 0:
            self.w2_ = out.weight.detach().numpy().T.copy()
            self.b2_ = out.bias.detach().numpy().copy()
        return self

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if "w1_" in state:
            state["w1_"] = state["w1_"].astype(np.float16)  # exact: the weights were rounded to float16 in fit
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "w1_" in state:
            state["w1_"] = state["w1_"].astype(np.float32)
        self.__dict__.update(state)

    def decision_function(self, x: Any) -> np.ndarray:
        # float32 throughout, as trained: a float64 x would make scipy convert the whole first layer per call
        # (15 ms for one row against 62k x 256 weights, 0.07 ms without)
        h = np.asarray(x.astype(np.float32, copy=False) @ self.w1_) + self.b1_
        if self.hidden > 0:
            h = np.maximum(h, 0.0) @ self.w2_ + self.b2_
        return h.astype(np.float64)

    def predict_proba(self, x: Any, groups: Sequence[str]) -> np.ndarray:
        """Probabilities restricted to each row's group (a group never seen in training: every class allowed)."""
        logits = self.decision_function(x)
        every = np.ones(len(self.classes_), dtype=bool)
        mask = np.array([self.masks_[self.groups_[g]] if g in self.groups_ else every for g in groups])
        logits = np.where(mask, logits, -np.inf)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)


def _torch_sparse(x: Any) -> Any:
    import torch  # lazy, as in fit

    coo = x.tocoo()
    indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    return torch.sparse_coo_tensor(indices, torch.from_numpy(coo.data.astype(np.float32)), coo.shape,
                                   check_invariants=False)
