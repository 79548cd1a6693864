"""An XGBoost binary classifier's trees as flat numpy arrays, for one-row scoring.

XGBoost's own predict call has a fixed cost of about 0.3 to 0.5 ms (configuration, a proxy
matrix, its thread pool) whatever the input size, while walking 300 trees of depth 4 is
1,200 comparisons. On the serving path that fixed cost is most of a request, so serving
walks the trees itself: every tree, for every row, advances one level per numpy step.

The walk follows XGBoost's rules exactly: inputs and thresholds are float32, a value goes
left when it is below the threshold, a missing value (NaN) takes the node's default
direction, leaf values are added tree by tree in float32 onto the base margin, and the
probability is the float32 logistic of the margin, with the C library's ``expf``: the scores
are XGBoost's, bit for bit (the tests compare them exactly).

`FlatTreeEnsemble.from_booster` refuses what it does not reproduce (other objectives,
categorical splits, vector leaves), and `agreement_error` measures the largest difference
from the booster on rows built to sit on every threshold, so the caller can fall back to the
booster if the two ever disagree. `save` and `load` keep a checked walk on disk: loading it
needs numpy only, which is what lets a server start scoring before XGBoost is imported.
"""

from __future__ import annotations

import ctypes
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, SupportsFloat

import numpy as np

if TYPE_CHECKING:  # only a booster's own methods are called: no import for the type
    import xgboost as xgb

_LEAF = -1
_ARRAYS = ("roots", "feature", "threshold", "left", "default_left", "value")
_SUPPORTED_OBJECTIVE = "binary:logistic"


class UnsupportedBooster(ValueError):
    """The booster uses a feature the flat walk does not reproduce."""


@dataclass(frozen=True, eq=False)
class FlatTreeEnsemble:
    """All trees in one node table; a node's right child is always its left child + 1.

    A leaf is a node that always goes left, to itself: it splits on an extra input that is
    always -inf, at +inf. So walking ``depth`` steps from every root ends on a leaf
    whatever the tree's own depth, with no test for leaves in the loop.
    """

    roots: np.ndarray  # int64, one per tree, in boosting order
    feature: np.ndarray  # int64 split feature (n_features, the -inf input, on leaves)
    threshold: np.ndarray  # float32 split value (+inf on leaves)
    left: np.ndarray  # int64 left child (the node itself on leaves)
    default_left: np.ndarray  # bool: where a missing value goes
    value: np.ndarray  # float32 leaf value; the first tree's include the base margin
    depth: int
    n_features: int

    @classmethod
    def from_booster(cls, booster: xgb.Booster) -> FlatTreeEnsemble:
        """Compile BOOSTER; raises `UnsupportedBooster` for models it cannot reproduce."""
        learner = json.loads(booster.save_raw("json"))["learner"]
        objective = learner["objective"]["name"]
        if objective != _SUPPORTED_OBJECTIVE:
            raise UnsupportedBooster(f"objective {objective!r} (only {_SUPPORTED_OBJECTIVE})")
        booster_model = learner["gradient_booster"]
        if booster_model["name"] != "gbtree":
            raise UnsupportedBooster(f"booster {booster_model['name']!r} (only gbtree)")
        trees = [_Tree.parse(tree) for tree in booster_model["model"]["trees"]]
        base_score = np.float32(learner["learner_model_param"]["base_score"].strip("[]"))
        n_features = int(learner["learner_model_param"]["num_feature"])
        return cls._assemble(trees, _logit(base_score), n_features)

    @classmethod
    def _assemble(
        cls, trees: list[_Tree], base_margin: np.float32, n_features: int
    ) -> FlatTreeEnsemble:
        if not trees:
            raise UnsupportedBooster("a booster without trees")
        columns: dict[str, list[Any]] = {name: [] for name in _Tree.COLUMNS}
        roots = []
        for tree in trees:
            roots.append(len(columns["feature"]))
            for name, values in tree.relaid(roots[-1], leaf_feature=n_features).items():
                columns[name].extend(values)
        value = np.array(columns["value"], dtype=np.float32)
        first_tree_leaves = slice(0, roots[1] if len(roots) > 1 else value.size)
        value[first_tree_leaves] += base_margin  # in float32, as XGBoost's first addition
        return cls(
            roots=np.array(roots, dtype=np.int64),
            feature=np.array(columns["feature"], dtype=np.int64),
            threshold=np.array(columns["threshold"], dtype=np.float32),
            left=np.array(columns["left"], dtype=np.int64),
            default_left=np.array(columns["default_left"], dtype=bool),
            value=value,
            depth=max(tree.depth for tree in trees),
            n_features=n_features,
        )

    def save(self, path: Path) -> None:
        """Write the arrays to PATH (an ``.npz`` file), to `load` without the booster."""
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        np.savez(path, **arrays, depth=self.depth, n_features=self.n_features)

    @classmethod
    def load(cls, path: Path) -> FlatTreeEnsemble:
        """What `save` wrote; numpy alone, no pickled objects."""
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in _ARRAYS}
            return cls(**arrays, depth=int(stored["depth"]), n_features=int(stored["n_features"]))

    def margins(self, rows: np.ndarray) -> np.ndarray:
        """The raw (log-odds) score of each row of a 2-D array, as float32."""
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got {rows.shape}")
        count, width, trees = rows.shape[0], self.n_features + 1, self.roots.size
        missing = np.isnan(np.add.reduce(rows, axis=None))  # NaN (or ±inf: harmless) anywhere
        x = np.empty((count, width), dtype=np.float32)
        x[:, :-1] = rows
        x[:, -1] = -np.inf
        inputs_of = x.ravel()
        row_start: int | np.ndarray
        if count == 1:
            nodes, row_start = self.roots, 0
        else:  # a node per (row, tree) pair, and where that row starts in the flat inputs
            nodes = np.tile(self.roots, count)
            row_start = np.repeat(np.arange(0, count * width, width), trees)
        for _ in range(self.depth):
            inputs = inputs_of[self.feature[nodes] + row_start]
            if missing:
                goes_right = ~(inputs < self.threshold[nodes])
                goes_right &= ~(np.isnan(inputs) & self.default_left[nodes])
            else:
                goes_right = inputs >= self.threshold[nodes]
            nodes = self.left[nodes] + goes_right
        # Tree by tree, as XGBoost adds them (the base margin is in the first tree's leaves):
        # a pairwise sum, which is what numpy's sum does, would round differently.
        leaves = self.value[nodes].reshape(count, trees)
        return np.cumsum(leaves, axis=1, dtype=np.float32)[:, -1]

    def probabilities(self, rows: np.ndarray) -> np.ndarray:
        """Fraud probability of each row of a 2-D array (float32, like XGBoost's)."""
        return _sigmoid(self.margins(rows))

    def agreement_error(self, booster: xgb.Booster, rng: np.random.Generator) -> float:
        """Largest |difference| from BOOSTER's probabilities on rows that probe every split.

        Each value is a threshold of its feature, the float32 just below one, or (for a few
        rows) missing, so every comparison is tried on both sides of its edge.
        """
        rows = self._probe_rows(rng)
        expected = booster.inplace_predict(rows)
        return float(np.max(np.abs(self.probabilities(rows) - expected)))

    def _probe_rows(self, rng: np.random.Generator, count: int = 512) -> np.ndarray:
        rows = np.zeros((count, self.n_features), dtype=np.float32)
        for column in range(self.n_features):
            edges = self.threshold[self.feature == column]
            if edges.size == 0:
                rows[:, column] = rng.normal(size=count)
                continue
            below = np.nextafter(edges, np.float32(-np.inf))
            candidates = np.concatenate([edges, below])
            rows[:, column] = rng.choice(candidates, size=count)
        rows[rng.random(rows.shape) < 0.02] = np.nan
        return rows


@dataclass(frozen=True)
class _Tree:
    """One tree of XGBoost's JSON model, re-laid out so right children follow left ones."""

    left_children: list[int]
    right_children: list[int]
    split_indices: list[int]
    split_conditions: list[float]
    default_left: list[int]

    COLUMNS = ("feature", "threshold", "left", "default_left", "value")

    @classmethod
    def parse(cls, tree: dict[str, Any]) -> _Tree:
        if any(tree["split_type"]) or tree["categories"]:
            raise UnsupportedBooster("categorical splits")
        if int(tree["tree_param"].get("size_leaf_vector", "1")) > 1:
            raise UnsupportedBooster("vector leaves (multi-target trees)")
        return cls(
            tree["left_children"],
            tree["right_children"],
            tree["split_indices"],
            tree["split_conditions"],
            tree["default_left"],
        )

    @cached_property
    def depth(self) -> int:
        return max(depth for _, depth in self._breadth_first)

    @cached_property
    def _breadth_first(self) -> list[tuple[int, int]]:
        """(XGBoost node id, depth) from the root, siblings next to each other."""
        order, position = [(0, 0)], 0
        while position < len(order):
            node, depth = order[position]
            if self.left_children[node] != _LEAF:
                order += [(self.left_children[node], depth + 1)]
                order += [(self.right_children[node], depth + 1)]
            position += 1
        return order

    def relaid(self, offset: int, leaf_feature: int) -> dict[str, list[Any]]:
        """The tree's columns in breadth-first order, node numbers shifted by OFFSET;
        leaves split on LEAF_FEATURE."""
        order = [node for node, _ in self._breadth_first]
        new_id = {node: offset + index for index, node in enumerate(order)}
        columns: dict[str, list[Any]] = {name: [] for name in self.COLUMNS}
        for node in order:
            leaf = self.left_children[node] == _LEAF
            columns["feature"].append(leaf_feature if leaf else self.split_indices[node])
            columns["threshold"].append(np.inf if leaf else self.split_conditions[node])
            columns["left"].append(new_id[node] if leaf else new_id[self.left_children[node]])
            columns["default_left"].append(bool(self.default_left[node]))
            columns["value"].append(self.split_conditions[node] if leaf else 0.0)
        return columns


def _c_float_function(name: str) -> Callable[[SupportsFloat], float] | None:
    """A float32 function of the C library (``expf``, ``logf``), as XGBoost calls it; None
    where the library cannot be opened this way."""
    try:
        function = ctypes.CDLL(None)[name]
    except (OSError, AttributeError, TypeError):
        return None
    function.restype = ctypes.c_float
    function.argtypes = [ctypes.c_float]
    return function


_EXPF = _c_float_function("expf")
_LOGF = _c_float_function("logf")


def _logit(probability: np.float32) -> np.float32:
    """XGBoost's base margin of a base score: ``-logf(1 / p - 1)`` in float32."""
    one = np.float32(1)
    odds = one / probability - one
    return np.float32(-(_LOGF(odds) if _LOGF is not None else np.log(np.float64(odds))))


def _sigmoid(margin: np.ndarray) -> np.ndarray:
    """XGBoost's ``1 / (1 + expf(-x))`` in float32, bit for bit where ``expf`` is the same.

    numpy's float32 ``exp`` is a vectorised approximation that differs in the last bit for
    a quarter of inputs; the C library's is what XGBoost uses. Without it, float64 ``exp``
    rounded to float32 agrees for all but about one input in 2,000.
    """
    one = np.float32(1)
    if _EXPF is not None:
        exp = np.array([_EXPF(-value) for value in margin.tolist()], dtype=np.float32)
    else:
        exp = np.exp(-margin.astype(np.float64)).astype(np.float32)
    return one / (one + exp)
