"""The optimiser against section 5's update rule, and the schedules against their formulas."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from alexnet_jax import optim


def optim_config(**changes):
  c = ml_collections.ConfigDict(
      dict(
          learning_rate=0.01,
          momentum=0.9,
          weight_decay=5e-4,
          decay_biases=False,
          schedule='plateau',
          plateau_factor=0.1,
          plateau_patience=2,
          plateau_cooldown=0,
          plateau_rtol=1e-6,
          plateau_max_reductions=3,
          step_boundaries=(0.5, 0.75),
          step_factor=0.1,
          warmup_steps=10,
      )
  )
  c.update(changes)
  return c


@pytest.mark.parametrize('decay_biases', [False, True])
def test_sgd_matches_the_papers_update_rule(decay_biases):
  """v <- 0.9 v - 0.0005 eps w - eps g;  w <- w + v   (section 5), biases decayed or not.

  The learning rate changes during the run (a step schedule, then a plateau reduction): the
  rule multiplies each new gradient by the rate of its own step, never the momentum buffer.
  """
  rng = np.random.default_rng(0)
  params = {'fc': {'kernel': rng.normal(size=(3, 4)), 'bias': rng.normal(size=(4,))}}
  grads = [
      {'fc': {'kernel': rng.normal(size=(3, 4)), 'bias': rng.normal(size=(4,))}} for _ in range(6)
  ]
  config = optim_config(decay_biases=decay_biases, schedule='step', step_boundaries=(0.5,))
  tx = optim.create_optimizer(config, num_train_steps=6)  # eps: 0.01 for steps 0-2, then 0.001
  plateau_scales = [1.0, 1.0, 1.0, 1.0, 0.1, 0.1]  # and a reduction before step 4
  p = {k: {n: jnp.asarray(v, jnp.float32) for n, v in d.items()} for k, d in params.items()}
  state = tx.init(p)

  w = {n: v.copy() for n, v in params['fc'].items()}
  v = {n: np.zeros_like(x) for n, x in w.items()}
  for step, (g, scale) in enumerate(zip(grads, plateau_scales, strict=True)):
    gj = {k: {n: jnp.asarray(x, jnp.float32) for n, x in d.items()} for k, d in g.items()}
    updates, state = tx.update(gj, state, p, plateau_scale=jnp.asarray(scale))
    p = optax.apply_updates(p, updates)
    eps = (0.01 if step < 3 else 0.001) * scale
    for n in w:
      decay = 5e-4 if (n == 'kernel' or decay_biases) else 0.0
      v[n] = 0.9 * v[n] - decay * eps * w[n] - eps * g['fc'][n]
      w[n] = w[n] + v[n]
  for n in w:
    np.testing.assert_allclose(np.asarray(p['fc'][n]), w[n], rtol=1e-5, atol=1e-7)


def run_plateau(errors, **changes):
  plateau = optim.create_plateau(optim_config(**changes))
  state = plateau.init(None)
  scales = []
  for e in errors:
    _, state = plateau.update(updates=None, state=state, value=jnp.asarray(e, jnp.float32))
    scales.append(float(state.scale))
  return scales


def reference_plateau(errors, patience, factor=0.1, max_reductions=3, cooldown=0):
  """The rule in words: after `patience` evaluations without a new best, divide by 10."""
  best, bad, scale, reductions, cool, out = math.inf, 0, 1.0, 0, 0, []
  for e in errors:
    if e < best:
      best, bad = e, 0
    elif cool > 0:
      cool -= 1
      bad = 0
    else:
      bad += 1
    if cool == 0 and bad == patience:
      if reductions < max_reductions:
        scale *= factor
        reductions += 1
      bad, cool = 0, cooldown
    out.append(scale)
  return out


@pytest.mark.parametrize('patience', [1, 2, 3])
def test_plateau_follows_the_validation_error(patience):
  errors = [0.9, 0.8, 0.8, 0.81, 0.7, 0.7, 0.7, 0.72, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
  got = run_plateau(errors, plateau_patience=patience)
  want = reference_plateau(errors, patience)
  np.testing.assert_allclose(got, want, rtol=1e-3)
  assert want[-1] < 1.0  # the sequence does trigger reductions


def test_plateau_stops_after_three_reductions():
  scales = run_plateau([0.5] * 40, plateau_patience=1)
  assert len(set(np.round(scales, 6))) == 4  # 1, 0.1, 0.01, 0.001
  np.testing.assert_allclose(scales[-1], 1e-3, rtol=1e-3)


def test_step_and_cosine_schedules():
  step = optim.learning_rate_schedule(optim_config(schedule='step'), 100)
  np.testing.assert_allclose(
      [float(step(s)) for s in (0, 49, 50, 74, 75, 99)],
      [0.01, 0.01, 0.001, 0.001, 1e-4, 1e-4],
      rtol=1e-5,
  )
  cosine = optim.learning_rate_schedule(optim_config(schedule='cosine'), 110)
  np.testing.assert_allclose(float(cosine(5)), 0.01 * 5 / 10, rtol=1e-5)
  # After warm-up: 0.01 * (1 + cos(pi * t / T)) / 2 with t counted from the end of warm-up.
  np.testing.assert_allclose(
      float(cosine(60)), 0.01 * (1 + math.cos(math.pi * 50 / 100)) / 2, rtol=1e-4
  )
  with pytest.raises(ValueError, match='optim.schedule'):
    optim.learning_rate_schedule(optim_config(schedule='linear'), 10)


def naive_plateau(errors, *, factor, patience, rtol, cooldown, max_reductions):
  """Section 5's rule as the recipe states it, in plain Python: an error counts as progress only
  if it is below the best so far by more than `rtol` of it; after `patience` evaluations without
  progress the rate is divided by 1 / factor (at most `max_reductions` times), and the next
  `cooldown` evaluations neither count towards a plateau nor cut (a new best still counts)."""
  best, since_progress, cooling, cuts, rate, rates = math.inf, 0, 0, 0, 1.0, []
  for error in errors:
    progress = error < best * (1 - rtol)
    if progress:
      best = error
    if cooling:
      cooling -= 1
      since_progress = 0
    else:
      since_progress = 0 if progress else since_progress + 1
      if since_progress == patience:
        if cuts < max_reductions:
          cuts += 1
          rate = factor**cuts
        since_progress, cooling = 0, cooldown
    rates.append(rate)
  return rates


# Validation errors that stall within the recipe's 0.1% (0.4996 is 0.08% below 0.5): no progress
# at rtol=1e-3, progress at 1e-6. A new best (0.45) comes 2 evaluations after the first cut, then
# a long plateau, also within 0.1% of it, that outlasts every cooldown.
STALLING_ERRORS = [0.6, 0.5, 0.4996, 0.4997, 0.4996, 0.4998, 0.4996, 0.4996, 0.45]
STALLING_ERRORS += [0.4496, 0.4497, 0.4496, 0.4498] + [0.4496] * 14


@pytest.mark.parametrize('cooldown', [None, 3])  # None: the recipe's own
def test_plateau_at_the_paper_recipes_threshold_and_cooldown(cooldown):
  from alexnet_jax import settings  # pylint: disable=g-import-not-at-top
  from alexnet_jax import steps  # pylint: disable=g-import-not-at-top
  from alexnet_jax.configs import alexnet  # pylint: disable=g-import-not-at-top

  recipe = settings.from_config(alexnet.get_config()).optim
  # The README's "Reduce on plateau": factor 0.1, at most 3 reductions, patience 5 evaluations,
  # 0.1% of the error as progress, no cooldown.
  assert (recipe.plateau_factor, recipe.plateau_max_reductions) == (0.1, 3)
  assert (recipe.plateau_patience, recipe.plateau_rtol, recipe.plateau_cooldown) == (5, 1e-3, 0)
  if cooldown is not None:
    recipe = dataclasses.replace(recipe, plateau_cooldown=cooldown)
  rule = dict(factor=0.1, patience=5, rtol=1e-3, max_reductions=3)
  want = naive_plateau(STALLING_ERRORS, cooldown=recipe.plateau_cooldown, **rule)

  # The trainer's path: steps.plateau_update on a train state, once per evaluation.
  plateau = optim.create_plateau(recipe)
  state = steps.TrainState(
      step=jnp.zeros((), jnp.int32),
      params={},
      batch_stats={},
      opt_state=(),
      plateau=plateau.init(None),
      rng=jnp.zeros((2,), jnp.uint32),
  )
  update = jax.jit(functools.partial(steps.plateau_update, plateau))  # one compile, not 27 traces
  got = []
  for error in STALLING_ERRORS:
    state = update(state, error)
    got.append(float(state.plateau.scale))
  np.testing.assert_allclose(got, want, rtol=1e-5)

  # The sequence tells the settings apart: the cuts come where the recipe's threshold and this
  # cooldown put them, and nowhere a smaller threshold or another cooldown would.
  cuts = [i for i in range(1, len(want)) if want[i] < want[i - 1]]
  assert cuts == ([6, 13, 18] if cooldown is None else [6, 14, 22])
  assert want[-1] == pytest.approx(0.001)  # three cuts, and no fourth
  assert (
      naive_plateau(STALLING_ERRORS, cooldown=recipe.plateau_cooldown, **rule | {'rtol': 1e-6})
      != want
  )
  assert naive_plateau(STALLING_ERRORS, cooldown=3 if cooldown is None else 0, **rule) != want
