"""The README's commands are the ones that run: CI runs its test command verbatim."""

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_commands():
  text = open(os.path.join(REPO, 'README.md')).read()
  return re.findall(r'```bash\n(.*?)\n```', text, flags=re.S)


def test_ci_runs_exactly_the_readme_test_command():
  commands = readme_commands()
  assert len(commands) >= 2
  ci = open(os.path.join(REPO, '.ci', 'run')).read().strip().splitlines()[-1]
  assert ci == commands[1].strip()


def test_quickstart_command_names_existing_config():
  quickstart = readme_commands()[0]
  for config in re.findall(r'--config=(\S+)', quickstart):
    assert os.path.exists(os.path.join(REPO, config)), config


def test_every_command_the_readme_names_is_a_module_of_the_package():
  import importlib.util  # pylint: disable=g-import-not-at-top

  text = open(os.path.join(REPO, 'README.md')).read()
  modules = set(re.findall(r'python -m (alexnet_jax[\w.]*)', text))
  assert {'alexnet_jax.main', 'alexnet_jax.tools.evaluate', 'alexnet_jax.tools.export'} <= modules
  missing = [
      m for m in sorted(modules - {'alexnet_jax.tools.NAME'}) if not importlib.util.find_spec(m)
  ]
  assert not missing, missing
