"""What trained networks say: ensembles (section 6), the conv1 kernels of each tower (Figure 3)
and the images nearest in fc7 space (Figure 4).

The networks come from `inference.load(workdir)`, their softmax and any layer's activations on a
split from `inference.features`; the functions here are of arrays. Everything runs on one device:
the validation splits of the experiments are small, and a researcher inspecting a model should
not need a mesh.
"""

import itertools

import jax.numpy as jnp
import numpy as np
import pandas as pd

from alexnet_jax import steps
from alexnet_jax.trained import inference


def top1_error(probs: np.ndarray, labels: np.ndarray) -> float:
  """Top-1 error of predictions (any scores), by the trainer's own rule (`steps.error_rates`): a
  tie, or a NaN, counts against the label."""
  top1, _ = steps.error_rates(jnp.asarray(probs), jnp.asarray(labels))
  return float(jnp.mean(top1))


def ensemble_errors(member_probs: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
  """Section 6's ensembles: the softmax of k models averaged, for k = 1..K.

  `member_probs` is K x N x classes. For each k, every one of the C(K, k) subsets of the K models
  is an ensemble; the row gives the mean, std and number of their top-1 errors, so k = 1 is the
  spread of single models and k = K the one ensemble of all of them.
  """
  count = len(member_probs)
  rows = []
  for k in range(1, count + 1):
    errors = [
        top1_error(member_probs[list(subset)].mean(axis=0), labels)
        for subset in itertools.combinations(range(count), k)
    ]
    rows.append(
        {
            'models': k,
            'top1_error_mean': float(np.mean(errors)),
            'top1_error_std': float(np.std(errors, ddof=1)) if len(errors) > 1 else 0.0,
            'ensembles': len(errors),
        }
    )
  return pd.DataFrame(rows)


def conv1_kernels(trained: inference.Trained) -> list[np.ndarray]:
  """conv1's kernels, one (channels, 11, 11, 3) array per tower (Figure 3's two halves)."""
  kernel = np.asarray(trained.params['conv1']['kernel'], np.float32)  # (11, 11, 3, channels)
  per_tower = np.split(kernel, trained.run.model.towers, axis=-1)
  return [np.moveaxis(k, -1, 0) for k in per_tower]


def colour_specificity(kernels: np.ndarray) -> np.ndarray:
  """Per kernel (..., H, W, 3): the share of its energy that is colour, not luminance.

  A kernel splits into its grey part (the mean over R, G and B at each position, the same in all
  three channels) and the rest, which sums to zero over the channels at every position and so is
  pure colour contrast. The share is |rest|^2 / |kernel|^2: 0 for a kernel that sees only
  luminance (Figure 3's first tower), 1 for one blind to luminance, and 2/3 on average for the
  random initialisation (independent channels).
  """
  kernels = np.asarray(kernels, np.float64)
  grey = kernels.mean(axis=-1, keepdims=True)
  total = np.sum(kernels**2, axis=(-3, -2, -1))
  return np.sum((kernels - grey) ** 2, axis=(-3, -2, -1)) / np.maximum(total, 1e-30)


def nearest(
    query: np.ndarray,
    database: np.ndarray,
    k: int,
    exclude_self: bool = False,
    exclude: np.ndarray | None = None,
):
  """Indices of the `k` rows of `database` nearest to each row of `query` in Euclidean distance
  (Figure 4 uses fc7's 4096 activations), nearest first. `exclude` holds, per query row, a
  database index to skip (the query's own row) or -1; `exclude_self` (query rows are database
  rows 0..Q-1) skips each row's own index."""
  query = np.asarray(query, np.float64)
  database = np.asarray(database, np.float64)
  distances = (
      np.sum(query**2, axis=1)[:, None]
      - 2 * query @ database.T
      + np.sum(database**2, axis=1)[None, :]
  )
  if exclude_self:
    exclude = np.arange(len(query))
  if exclude is not None:
    rows = np.flatnonzero(np.asarray(exclude) >= 0)
    distances[rows, np.asarray(exclude)[rows]] = np.inf
  return np.argsort(distances, axis=1, kind='stable')[:, :k]
