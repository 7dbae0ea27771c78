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


def smoothness(kernels: np.ndarray) -> np.ndarray:
  """Per kernel (..., H, W, C): the correlation between the weights of neighbouring positions
  (each weight against the one to its right and the one below, in every channel, the kernel's
  mean taken out). Figure 3's kernels, oriented edges and colour blobs, vary slowly across
  space, so it is high; the random start's independent draws give about 0. The number that says
  whether conv1 learned anything beyond the noise it started from."""
  k = np.asarray(kernels, np.float64)
  k = k - k.mean(axis=(-3, -2, -1), keepdims=True)
  pairs = [(k[..., :, :-1, :], k[..., :, 1:, :]), (k[..., :-1, :, :], k[..., 1:, :, :])]
  products = sum(np.sum(a * b, axis=(-3, -2, -1)) for a, b in pairs)
  squares = sum(np.sum((a**2 + b**2) / 2, axis=(-3, -2, -1)) for a, b in pairs)
  return products / np.maximum(squares, 1e-30)


def tower_split(
    tower_1: np.ndarray, tower_2: np.ndarray, permutations: int = 10000, seed: int = 0
) -> tuple[float, float]:
  """Do two towers' kernels differ in a per-kernel number (their colour share)? The difference
  of the towers' means, and its two-sided p against the null that the towers are arbitrary halves
  of the same kernels: the kernels' tower labels shuffled `permutations` times. The p counts the
  observed split among the shuffles, so it is never 0."""
  a, b = np.asarray(tower_1, np.float64), np.asarray(tower_2, np.float64)
  observed = float(b.mean() - a.mean())
  pooled = np.concatenate([a, b])
  rng = np.random.default_rng(seed)
  shuffled = np.stack([rng.permutation(pooled) for _ in range(permutations)])
  null = shuffled[:, len(a) :].mean(axis=1) - shuffled[:, : len(a)].mean(axis=1)
  # A tolerance: a shuffle that reproduces the observed split may differ in its last bits.
  extreme = np.sum(np.abs(null) >= abs(observed) * (1 - 1e-12))
  return observed, float((1 + extreme) / (1 + permutations))


def neighbour_agreement(labels: np.ndarray, neighbours: np.ndarray, groups=None) -> dict:
  """How often the `neighbours` (indices, a row per query, the query itself excluded) share the
  query's label, and what chance gives: `chance`, a neighbour drawn uniformly from the other
  images; with `groups` (an array of a group per image: the hard variant's palette), the share
  of neighbours in the query's group and `chance_within_group`, a neighbour drawn uniformly
  from the other images of the query's group, the chance level of a retrieval that already
  tells the groups apart and knows nothing more."""
  labels = np.asarray(labels)
  n = len(labels)
  out = {'same_label': float(np.mean(labels[neighbours] == labels[:, None]))}
  _, counts = np.unique(labels, return_inverse=False, return_counts=True)
  count_of = dict(zip(np.unique(labels), counts))
  out['chance'] = float(np.mean([(count_of[l] - 1) / (n - 1) for l in labels]))
  if groups is not None:
    groups = np.asarray(groups)
    out['same_group'] = float(np.mean(groups[neighbours] == groups[:, None]))
    within = []
    for i in range(n):
      peers = (groups == groups[i]) & (np.arange(n) != i)
      within.append(np.mean(labels[peers] == labels[i]))
    out['chance_within_group'] = float(np.mean(within))
  return out


def pixel_vectors(images, size: int = 32) -> np.ndarray:
  """Each image (uint8 HxWx3) shrunk to size x size (PIL's box filter) and flattened: the
  pixel-space baseline of Figure 4's retrieval, nearest neighbours with no network at all."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  return np.stack(
      [
          np.asarray(
              Image.fromarray(np.asarray(i)).resize((size, size), Image.BOX), np.float32
          ).reshape(-1)
          for i in images
      ]
  )
