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
