"""The smallest run of the real recipe, for tests; importing it touches no device."""


def tiny_config(data_dir):
  """The quickstart's recipe, shrunk: tiny dataset, narrow model, small images, a few steps."""
  from configs import quickstart
  c = quickstart.get_config()
  c.dataset = 'synthetic_shapes/tiny'
  c.data_dir = data_dir
  c.image_size = 67
  c.resize_size = 76
  c.model.width = 0.25
  c.batch_size = 16
  c.eval_batch_size = 64
  c.num_train_steps = 6
  c.log_every_steps = 3
  c.eval_every_steps = 3
  c.checkpoint_every_steps = 3
  c.optim.plateau_patience = 1
  return c


def plateau_config(data_dir, strategy='data', steps=6):
  """The paper's schedule, evaluated every step with patience 1, so the plateau state moves."""
  config = tiny_config(data_dir)
  config.strategy = strategy
  config.optim.schedule = 'plateau'
  config.optim.learning_rate = 0.01
  config.eval_every_steps = 1
  config.num_train_steps = steps
  return config
