"""The README's commands are the ones that run: CI runs its test command verbatim.

The README is the front page; the guides are docs/*.md. Every relative link in them resolves, every
module, config and flag their commands name exists, and the README stays a front page.
"""

import functools
import glob
import importlib.util
import os
import re
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README_MAX_BYTES = 15_000


def read(path):
  with open(os.path.join(REPO, path), encoding='utf-8') as f:
    return f.read()


def pages():
  """README.md and every guide, as paths relative to the repository."""
  docs = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, 'docs', '*.md')))
  return ['README.md'] + docs


def readme_commands():
  return re.findall(r'```bash\n(.*?)\n```', read('README.md'), flags=re.S)


def bash_blocks(path):
  return re.findall(r'```bash\n(.*?)\n```', read(path), flags=re.S)


def without_code(text):
  """The text without fenced blocks and inline code, where `[x](y)` is not a link."""
  text = re.sub(r'```.*?```', '', text, flags=re.S)
  return re.sub(r'`[^`\n]*`', '', text)


def slug(heading):
  """GitHub's anchor for a heading: lowercase, spaces to '-', punctuation but '-' and '_'
  dropped."""
  heading = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', heading.strip())  # a link keeps its text
  return re.sub(r'[^\w\- ]', '', heading.lower()).replace(' ', '-')


@functools.cache
def anchors(path):
  """Every heading's anchor in a markdown file, duplicates numbered as GitHub numbers them."""
  text = re.sub(r'```.*?```', '', read(path), flags=re.S)
  seen, out = {}, set()
  for heading in re.findall(r'^#{1,6} +(.+?) *#*$', text, flags=re.M):
    base = slug(heading)
    n = seen.get(base, 0)
    seen[base] = n + 1
    out.add(base if n == 0 else f'{base}-{n}')
  return out


def commands(path):
  """Each shell command of the file's ```bash blocks: continuations joined, comments dropped,
  split at `&&`, `;` and `|`."""
  out = []
  for block in bash_blocks(path):
    for line in block.replace('\\\n', ' ').splitlines():
      line = re.sub(r'(^|\s)#.*$', '', line)
      out += [c.strip() for c in re.split(r'&&|;|\|', line) if c.strip()]
  return out


def module_commands():
  """(page, module, the arguments after `python -m module`) for every such command in the docs."""
  out = []
  for page in pages():
    for command in commands(page):
      m = re.search(r'python3? -m (alexnet_jax[\w.]*)(.*)', command)
      if m:
        out.append((page, m.group(1), shlex.split(m.group(2))))
  return out


def test_ci_runs_exactly_the_readme_test_command():
  commands = readme_commands()
  assert len(commands) >= 2
  ci = read(os.path.join('.ci', 'run')).strip().splitlines()[-1]
  assert ci == commands[1].strip()


def test_quickstart_command_names_existing_config():
  quickstart = readme_commands()[0]
  for config in re.findall(r'--config=(\S+)', quickstart):
    assert os.path.exists(os.path.join(REPO, config)), config


def test_readme_is_a_front_page():
  size = len(read('README.md').encode('utf-8'))
  assert size <= README_MAX_BYTES, (
      f'README.md is {size} bytes, over {README_MAX_BYTES}: move the detail into a guide in docs/ '
      'and link to it.'
  )


def test_every_relative_link_resolves():
  broken = []
  for page in pages():
    for target in re.findall(r'\]\(([^)\s]+)\)', without_code(read(page))):
      if re.match(r'[a-z][a-z0-9+.-]*:', target):  # https:, mailto:
        continue
      path, _, anchor = target.partition('#')
      resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
      if not os.path.exists(os.path.join(REPO, resolved)):
        broken.append(f'{page}: {target} (no file {resolved})')
      elif anchor and (not resolved.endswith('.md') or anchor not in anchors(resolved)):
        broken.append(f'{page}: {target} (no heading #{anchor} in {resolved})')
  assert not broken, '\n'.join(broken)


def test_every_command_the_readme_names_is_a_module_of_the_package():
  modules = set()
  for page in pages():
    modules |= set(re.findall(r'python -m (alexnet_jax[\w.]*)', read(page)))
  assert {'alexnet_jax.main', 'alexnet_jax.tools.evaluate', 'alexnet_jax.tools.export'} <= modules
  missing = [
      m for m in sorted(modules - {'alexnet_jax.tools.NAME'}) if not importlib.util.find_spec(m)
  ]
  assert not missing, missing


def test_every_config_the_docs_name_exists():
  missing = []
  for page in pages():
    for config in re.findall(r'--config=([\w./-]+)', read(page)):
      if config.upper() == config or config.endswith('/NAME.py'):  # CONFIG, configs/NAME.py
        continue
      path = config if config.endswith('.py') else f'configs/{config}.py'  # an installed name
      if not os.path.exists(os.path.join(REPO, path)):
        missing.append(f'{page}: --config={config}')
  assert not missing, missing


# Flags absl itself defines for every command.
ABSL_FLAGS = {'help', 'helpfull', 'helpshort', 'flagfile', 'logtostderr', 'alsologtostderr', 'v'}


@functools.cache
def defined_flags(module):
  """The flags `python -m module` defines, read from its source (importing every command and its
  dependencies would take seconds): its DEFINE_*('name') calls and cli's flag helpers it calls."""
  source = read(importlib.util.find_spec(module).origin)
  names = set(re.findall(r"DEFINE_\w+\(\s*'(\w+)'", source)) | ABSL_FLAGS
  for args in re.findall(r'cli\.define_reading_flags\(([^)]*)\)', source):
    names |= {f for f in ('data_dir', 'batch_size') if f'{f}=False' not in args}
  if 'cli.define_compilation_cache_flag()' in source:
    names.add('compilation_cache')
  return names


def test_every_flag_of_the_docs_commands_is_defined():
  """`python -m alexnet_jax.X --flag` in a ```bash block names a flag X defines (or one of
  absl's)."""
  checked, unknown = 0, []
  for page, module, args in module_commands():
    for arg in args:
      m = re.match(r'--(?:no)?([\w-]+)(?:=|$)', arg)
      if not m:  # a value, or a --config.FIELD override (the next test)
        continue
      checked += 1
      name = m.group(1)
      if name not in defined_flags(module) and name.removeprefix('no') not in defined_flags(module):
        unknown.append(f'{page}: python -m {module} ... {arg}')
  assert checked > 20, checked
  assert not unknown, '\n'.join(unknown)


@functools.cache
def build_config(spec):
  """`configs/X.py:ARG` (or the installed name X) built as the command line would build it; None
  where the argument needs what is not here (finetune_folder's init_from reads a trained workdir,
  so it is built without that argument, which does not change the fields)."""
  path, _, arg = spec.partition(':')
  if not path.endswith('.py'):
    path = f'configs/{path}.py'
  loader = importlib.util.spec_from_file_location(
      f'_docs_config_{len(path)}', os.path.join(REPO, path)
  )
  config = importlib.util.module_from_spec(loader)
  loader.loader.exec_module(config)
  attempts = [arg or None, ','.join(a for a in arg.split(',') if not a.startswith('init_from='))]
  for attempt in attempts:
    try:
      return config.get_config(attempt or None)
    except Exception:  # pylint: disable=broad-except
      continue
  return None


def has_field(config, dotted):
  for part in dotted.split('.'):
    if not hasattr(config, 'keys') or part not in config:
      return False
    config = config[part]
  return True


def test_every_config_override_of_the_docs_commands_is_a_field():
  """`--config.a.b=V` in a ```bash block names a field of the config the command builds."""
  checked, unknown = 0, []
  for page, module, args in module_commands():
    specs = [a.split('=', 1)[1] for a in args if a.startswith('--config=')]
    overrides = [a[len('--config.') :].split('=')[0] for a in args if a.startswith('--config.')]
    if not overrides:
      continue
    # A command without --config (import_weights' default) is not checked: its config is the
    # module's default, named only in its source.
    if not specs:
      continue
    config = build_config(specs[0])
    assert config is not None, f'{page}: cannot build --config={specs[0]}'
    for field in overrides:
      checked += 1
      if not has_field(config, field):
        unknown.append(f'{page}: python -m {module} --config={specs[0]} ... --config.{field}')
  assert checked >= 3, checked
  assert not unknown, '\n'.join(unknown)


def test_every_config_field_the_docs_name_exists():
  """`--config.a.b` anywhere in the prose names a field of one of the recipes (the paper's, the
  quickstart, the fine-tuning ones, the experiments: the union of their fields)."""
  names = [
      os.path.basename(p)[: -len('.py')] for p in glob.glob(os.path.join(REPO, 'configs', '*.py'))
  ]
  configs = [build_config(n) for n in sorted(names) if n not in ('__init__', 'common')]
  configs = [c for c in configs if c is not None]
  assert len(configs) >= 10, len(configs)
  unknown = []
  for page in pages():
    for field in set(re.findall(r'--config\.([\w.]*\w)', read(page))):
      if field.isupper() or field == 'FIELD':  # --config.FIELD=VALUE, a placeholder
        continue
      if not any(has_field(c, field) for c in configs):
        unknown.append(f'{page}: --config.{field}')
  assert not unknown, '\n'.join(sorted(unknown))


# --- The docs' commands, run ---

# Run below, verbatim but for where the run lives (`runs/quickstart` is the README's quickstart:
# here its `:tiny` smoke run on the session's tiny data) and for these changes.
RUN_HERE_CHANGES = {
    # The tiny run's validation split has 160 images: the neighbours of images 0 and 50.
    '--query=0,500': '--query=0,50',
}
# Run by the test file named, which runs the same module with every flag the docs give it (checked
# below): a long run, a benchmark or a sweep shortened there.
RUN_ELSEWHERE = {
    'alexnet_jax.tools.export': 'test_export.py',
    'alexnet_jax.tools.sweep': ('test_sweep.py', 'test_launch.py'),
    'alexnet_jax.tools.benchmark': 'test_benchmark.py',
    'alexnet_jax.tools.profile_step': 'test_profile_step.py',
    'alexnet_jax.tools.loop_benchmark': 'test_loop_benchmark.py',
    'alexnet_jax.tools.member_benchmark': 'test_member_benchmark.py',
    'alexnet_jax.tools.pipeline_benchmark': 'test_pipeline_benchmark.py',
    'alexnet_jax.tools.communication': 'test_communication.py',
    'alexnet_jax.tools.prepare': 'test_prepare.py',
    'alexnet_jax.tools.colour_statistics': 'test_colour.py',
    'alexnet_jax.tools.import_weights': 'test_weights.py',
}
# Commands that need what no test machine has, each with why; they are still checked above (the
# module, its flags, the config and its fields).
NEEDS_WHAT_IS_NOT_HERE = {
    '--dataset=imagenet2012': "ImageNet's manually downloaded files",
    '--dataset=imagenette/320px-v2': 'a download',
    '--config=configs/alexnet.py': 'ImageNet, prepared',
    '--weights=alexnet-owt-7be5be79.pth': "torchvision's download (test_weights.py imports a file "
    'of random weights in its format)',
    '--workdir=runs/torchvision': "torchvision's weights (test_weights.py runs these commands on "
    'random weights in its format)',
    'init_from=runs/torchvision': "torchvision's weights and iFood 2019 (test_weights.py)",
    '--folder=$HOME/pictures/flowers': 'your pictures (test_prepare.py prepares a folder)',
    'init_from=runs/quickstart': 'a prepared folder of your pictures (test_weights.py fine-tunes '
    'on one)',
    '--config=configs/quickstart.py': 'minutes of training (the smoke run below is its :tiny)',
    '--config=quickstart': 'minutes of training (the smoke run below is its :tiny)',
    '--launcher=slurm': 'a SLURM cluster (test_launch.py runs the sweep command with '
    '--launcher=local, the same jobs as processes)',
}


def _is(arg: str, key: str) -> bool:
  """A flag key (`--name=value`) is the whole argument; another (`init_from=...`) a part of it."""
  return arg == key if key.startswith('--') else key in arg


def _plan():
  """Each docs command as (how it is covered, page, module, args)."""
  out = []
  for page, module, args in module_commands():
    needs = [why for key, why in NEEDS_WHAT_IS_NOT_HERE.items() if any(_is(a, key) for a in args)]
    if needs:
      out.append(('not here', page, module, args))
    elif module in RUN_ELSEWHERE:
      out.append(('elsewhere', page, module, args))
    else:
      out.append(('here', page, module, args))
  return out


def test_every_docs_command_is_run_here_or_by_its_modules_test():
  plan = _plan()
  here = [(m, a) for how, _, m, a in plan if how == 'here']
  assert len(here) >= 5, here
  assert {m for m, _ in here} >= {
      'alexnet_jax.main',
      'alexnet_jax.tools.evaluate',
      'alexnet_jax.tools.predict',
      'alexnet_jax.tools.features',
  }
  # Every entry of the tables still matches a docs command: none is a leftover.
  every_arg = [a for *_, args in plan for a in args]
  assert all(any(_is(a, key) for a in every_arg) for key in NEEDS_WHAT_IS_NOT_HERE)
  assert all(any(a == key for a in every_arg) for key in RUN_HERE_CHANGES)
  missing = []
  for how, page, module, args in plan:
    if how != 'elsewhere':
      continue
    tests = RUN_ELSEWHERE[module]
    tests = (tests,) if isinstance(tests, str) else tests
    source = '\n'.join(read(os.path.join('tests', name)) for name in tests)
    if module not in source and f"'{module.rsplit('.', 1)[-1]}'" not in source:
      missing.append(f'{page}: {module} is not run by {RUN_ELSEWHERE[module]}')
    for arg in args:
      flag = re.match(r'--([\w-]+)', arg)
      if flag and not re.search(rf'--{flag.group(1)}\b|\b{flag.group(1)}=', source):
        missing.append(f'{page}: {module} {arg}: {RUN_ELSEWHERE[module]} never passes it')
  assert not missing, '\n'.join(missing)


@pytest.mark.slow
def test_the_docs_commands_that_need_only_the_built_in_data_run(
    tiny_data_dir, command_env, tmp_path
):
  """The README's smoke run, then every docs command for a trained run that `_plan` runs here, in
  the order of the pages, each in a fresh process from a directory like a user's."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  photos = tmp_path / 'photos'
  photos.mkdir()
  for i, colour in enumerate([(200, 30, 30), (30, 30, 200)]):
    Image.new('RGB', (90, 70), colour).save(photos / f'{i}.png')
  ran = []
  for how, page, module, args in _plan():
    if how != 'here':
      continue
    args = [RUN_HERE_CHANGES.get(a, a).replace('runs/quickstart', 'runs/smoke') for a in args]
    if module == 'alexnet_jax.main':
      args.append(f'--config.data_dir={tiny_data_dir}')
    out = subprocess.run(
        [sys.executable, '-m', module, *args],
        cwd=tmp_path,
        env=command_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, (page, module, args, out.stdout[-2000:], out.stderr[-3000:])
    assert 'Traceback' not in out.stderr, out.stderr[-3000:]
    ran.append(module)
  assert ran[0] == 'alexnet_jax.main'  # the README's smoke run made the run the others use
  assert (tmp_path / 'runs' / 'smoke' / 'metrics.jsonl').exists()
  assert (tmp_path / 'predictions.json').exists()
  assert len(ran) >= 5, ran
