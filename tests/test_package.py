"""The package as a whole: its import graph, what its GPU-side modules import, and its wheel."""

import ast
import importlib.util
import json
import os
import pkgutil
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib

import pytest

import alexnet_jax
import alexnet_jax.configs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- The import graph ---


def package_modules() -> dict[str, str]:
  """Every module of alexnet_jax and alexnet_jax.configs, by name, with its source file.

  The walk goes into every directory of modules by hand, so a folder that lost its __init__.py
  (a namespace package, which pkgutil's walk skips) is still checked.
  """
  modules = {}

  def walk(package: str, directory: str):
    if os.path.exists(os.path.join(directory, '__init__.py')):
      modules[package] = os.path.join(directory, '__init__.py')
    for info in pkgutil.iter_modules([directory]):
      if not info.ispkg:
        modules[f'{package}.{info.name}'] = os.path.join(directory, f'{info.name}.py')
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
      if (
          entry.is_dir()
          and entry.name.isidentifier()
          and any(name.endswith('.py') for name in os.listdir(entry.path))
      ):
        walk(f'{package}.{entry.name}', entry.path)

  walk('alexnet_jax', os.path.dirname(alexnet_jax.__file__))
  walk('alexnet_jax.configs', os.path.dirname(alexnet_jax.configs.__file__))
  return modules


def _defined_names(path: str) -> set[str]:
  """Names bound at the top level of a file (defs, classes, assignments, imports)."""
  names = set()
  for node in ast.parse(open(path).read(), path).body:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      names.add(node.name)
    elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
      targets = node.targets if isinstance(node, ast.Assign) else [node.target]
      names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
      names.update((a.asname or a.name).split('.')[0] for a in node.names)
  return names


def import_graph(modules: dict[str, str]) -> tuple[dict[str, set[str]], list[str]]:
  """Each module's imports of the package's modules, module level and inside functions alike.

  `import a.b.c` and `from a.b import c` (c a module) name the module a.b.c; `from a.b import x`
  (x defined in a.b) names a.b. Returns the graph and the imports that name no module at all.
  """
  graph, broken = {name: set() for name in modules}, []
  for name, path in modules.items():
    package = name if path.endswith('__init__.py') else name.rpartition('.')[0]
    for node in ast.walk(ast.parse(open(path).read(), path)):
      if isinstance(node, ast.Import):
        targets = [(alias.name, None) for alias in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ''
        if node.level:  # relative: from the importing module's package, up level - 1 packages
          parts = package.split('.')
          base = '.'.join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
        targets = [(base, alias.name) for alias in node.names]
      else:
        continue
      for base, member in targets:
        if base != 'alexnet_jax' and not base.startswith('alexnet_jax.'):
          continue
        where = f'{path}:{node.lineno}'
        if member is not None and f'{base}.{member}' in modules:
          graph[name].add(f'{base}.{member}')
        elif base in modules and (
            member is None
            or member == '*'
            or not modules[base].endswith('__init__.py')
            or member in _defined_names(modules[base])
        ):
          graph[name].add(base)
        elif member is None and any(m.startswith(base + '.') for m in modules):
          pass  # `import alexnet_jax.data`: a namespace package, which runs no code
        else:
          broken.append(
              f'{where}: {base}'
              + (f' has no module or name {member!r}' if member else ' is no module')
          )
  return graph, broken


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """A cycle of `graph` as [a, b, ..., a], or None: depth-first search for an edge back onto the
  current path."""
  on_path, done = [], set()

  def visit(node):
    on_path.append(node)
    for child in sorted(graph.get(node, ())):
      if child in on_path:
        return on_path[on_path.index(child) :] + [child]
      if child not in done:
        cycle = visit(child)
        if cycle:
          return cycle
    on_path.pop()
    done.add(node)
    return None

  for node in sorted(graph):
    if node not in done:
      cycle = visit(node)
      if cycle:
        return cycle
  return None


def test_the_cycle_finder_finds_cycles():
  """Hand-made graphs: a three-module loop behind an entry point, a self-import, a diamond."""
  cycle = find_cycle({'d': {'a'}, 'a': {'b'}, 'b': {'c'}, 'c': {'a'}})
  assert cycle == ['a', 'b', 'c', 'a']
  assert find_cycle({'x': {'x'}}) == ['x', 'x']
  assert find_cycle({'a': {'b', 'c'}, 'b': {'d'}, 'c': {'d'}, 'd': set()}) is None


def test_the_walk_finds_every_package_the_wheel_installs():
  """The walk reaches the namespace packages (data/, tools/) and the configs, and its packages
  are exactly pyproject.toml's list: a new directory of modules the wheel would leave out fails."""
  modules = package_modules()
  for name in (
      'alexnet_jax.models',
      'alexnet_jax.data.pipeline',
      'alexnet_jax.tools.benchmark',
      'alexnet_jax.data.datasets.synthetic_shapes',
      'alexnet_jax.configs.quickstart',
  ):
    assert name in modules, sorted(modules)
  with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
    packages = tomllib.load(f)['tool']['setuptools']['packages']
  found = {
      name if path.endswith('__init__.py') else name.rpartition('.')[0]
      for name, path in modules.items()
  }
  assert found == set(packages), (sorted(found), packages)


def test_no_import_cycles():
  """The graph of every module's imports of the package (parsed with ast, so function-level
  imports count too) has no cycle, and every such import names a module that exists."""
  modules = package_modules()
  graph, broken = import_graph(modules)
  assert not broken, broken
  # The parser sees the imports: a few edges checked against the sources by eye.
  assert 'alexnet_jax.data.pipeline' in graph['alexnet_jax.train']  # from alexnet_jax.data import
  assert 'alexnet_jax.ops' in graph['alexnet_jax.models']  # from alexnet_jax.ops import f
  assert 'alexnet_jax.tools.torch_reference' in graph['alexnet_jax.tools.step_runners']  # in a def
  assert 'alexnet_jax.configs.common' in graph['alexnet_jax.configs.quickstart']
  cycle = find_cycle(graph)
  assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)


def private_uses(path: str, name: str, modules: dict[str, str]) -> list[str]:
  """Where the module `name` (source file `path`) uses an underscore name of another module of
  the package: `module._name` after importing that module, or `from module import _name`."""
  tree = ast.parse(open(path).read(), path)
  aliases, found = {}, []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      aliases.update({a.asname or a.name: a.name for a in node.names if a.name in modules})
    elif isinstance(node, ast.ImportFrom) and not node.level and node.module in modules:
      for alias in node.names:
        if f'{node.module}.{alias.name}' in modules:
          aliases[alias.asname or alias.name] = f'{node.module}.{alias.name}'
        elif alias.name.startswith('_') and node.module != name:
          found.append(f'{path}:{node.lineno}: from {node.module} import {alias.name}')
  for node in ast.walk(tree):
    if (
        isinstance(node, ast.Attribute)
        and node.attr.startswith('_')
        and not node.attr.startswith('__')
        and aliases.get(ast.unparse(node.value), name) != name
    ):
      found.append(f'{path}:{node.lineno}: {ast.unparse(node)}')
  return found


def test_no_module_uses_another_modules_private_names(tmp_path):
  """A name with a leading underscore is its module's own: every other module of the package
  (tools/ included) goes through public names. The finder finds a hand-made offender too."""
  modules = package_modules()
  offender = tmp_path / 'offender.py'
  offender.write_text(
      'import alexnet_jax.models\n'
      'from alexnet_jax.tools import benchmark as b\n'
      'from alexnet_jax.tools.step_runners import _torch_worker\n'
      'b._cells, alexnet_jax.models._private, b.__doc__\n'
  )
  found = private_uses(str(offender), 'alexnet_jax.offender', modules)
  assert [f.split(': ', 1)[1] for f in found] == [
      'from alexnet_jax.tools.step_runners import _torch_worker',
      'b._cells',
      'alexnet_jax.models._private',
  ], found
  found = [f for name, path in modules.items() for f in private_uses(path, name, modules)]
  assert not found, found


def test_every_module_imports():
  """Each module imports in a fresh process (syntax, imported names, module-level code), so
  `-m "not slow"` touches the modules whose own tests are all slow (the benchmarks). Only
  tools.torch_reference may be left out, where torch is not installed."""
  names = sorted(package_modules())
  if importlib.util.find_spec('torch') is None:
    names.remove('alexnet_jax.tools.torch_reference')
  code = (
      'import importlib, sys, traceback\n'
      f'for name in {names!r}:\n'
      '  try:\n'
      '    importlib.import_module(name)\n'
      '  except Exception:\n'
      '    print(name, traceback.format_exc(limit=-2))\n'
  )
  out = subprocess.run(
      [sys.executable, '-c', code], capture_output=True, text=True, timeout=300, cwd=REPO
  )
  assert out.returncode == 0 and not out.stdout, out.stdout[-3000:] + out.stderr[-3000:]


# --- Which way the imports go: recipes and after-training code on top of the trainer ---

# What comes after training (the trained/ folder), the experiments (sweeps/), the commands (tools/)
# and the tables' pandas: the trainer, and fine-tuning inside it, must work without any of them.
AFTER_TRAINING = (
    'alexnet_jax.trained',
    'alexnet_jax.sweeps',
    'alexnet_jax.tools',
    'pandas',
)
# The one module of trained/ a training run may reach, and only when init_from names a torchvision
# weights file: its reader (numpy and the core, imported inside the function that reads the file).
STARTS_FROM = 'alexnet_jax.trained.weights'
# Library modules that may import a recipe (configs/): none. Commands take their defaults from
# the typed settings' dataclasses, or a recipe through --config.
RECIPE_IMPORTS_LEFT: set[str] = set()
# What a recipe may take from the library: the typed settings' dataclasses (each section's
# defaults, written once: ModelConfig, OptimConfig, DataConfig, LoopConfig, MeshConfig) and
# published constants, never code that reads checkpoints or trains (flax's and big_vision's configs import no
# library code; tests/test_configs.py checks that building a config reads no file).
RECIPE_MAY_IMPORT = {
    'alexnet_jax.models',
    'alexnet_jax.optim',
    'alexnet_jax.settings',
    'alexnet_jax.sharding',
    'alexnet_jax.data.pipeline',
    'alexnet_jax.data.augment',
}


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
  seen, todo = set(), [start]
  while todo:
    for child in graph.get(todo.pop(), ()):
      if child not in seen:
        seen.add(child)
        todo.append(child)
  return seen


def test_the_trainer_does_not_sit_on_the_after_training_code():
  """In a fresh process `import alexnet_jax.train` brings in none of AFTER_TRAINING, and no
  import the trainer can reach, inside functions too (a fine-tuning run's loading), names one."""
  code = textwrap.dedent(f"""
      import json, sys
      import alexnet_jax.train
      print(json.dumps([m for m in sys.modules if m.startswith({AFTER_TRAINING!r})]))
      """)
  out = subprocess.run(
      [sys.executable, '-c', code], capture_output=True, text=True, timeout=120, cwd=REPO
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert json.loads(out.stdout.strip().splitlines()[-1]) == []
  graph, _ = import_graph(package_modules())
  reached = _reachable(graph, 'alexnet_jax.train')
  assert 'alexnet_jax.finetune' in reached  # the check sees the fine-tuning code
  assert STARTS_FROM in reached  # through finetune's reading of a weights file
  after = sorted(m for m in reached if m.startswith(AFTER_TRAINING) and m != STARTS_FROM)
  assert not after, after


# The package's top holds the network and its training; everything else lives in a folder named
# for its role (alexnet_jax/__init__.py's map).
MOST_TOP_MODULES = 14
MOST_LINES = 700


def test_the_top_holds_at_most_fourteen_modules_and_no_module_is_over_700_lines():
  modules = package_modules()
  top = sorted(
      name
      for name, path in modules.items()
      if name.count('.') == 1 and not path.endswith('__init__.py')
  )
  assert 'alexnet_jax.train' in top and 'alexnet_jax.data' not in top  # the count can see both
  assert len(top) <= MOST_TOP_MODULES, top
  lines = {name: sum(1 for _ in open(path)) for name, path in modules.items()}
  assert lines['alexnet_jax.models'] > 100  # counted from the files
  long = {name: n for name, n in lines.items() if n > MOST_LINES}
  assert not long, long


def test_the_library_imports_no_recipe_and_recipes_import_only_library_data():
  modules = package_modules()
  graph, _ = import_graph(modules)
  recipes = {name for name in modules if name.startswith('alexnet_jax.configs.')}
  importers = {
      name
      for name, imported in graph.items()
      if not name.startswith('alexnet_jax.configs') and imported & recipes
  }
  assert importers <= RECIPE_IMPORTS_LEFT, sorted(importers - RECIPE_IMPORTS_LEFT)
  assert not _reachable(graph, 'alexnet_jax.sweeps.sweep') & recipes  # variants come in the config
  for name in sorted(recipes):
    library = {m for m in graph[name] if not m.startswith('alexnet_jax.configs')}
    assert library <= RECIPE_MAY_IMPORT, (name, sorted(library - RECIPE_MAY_IMPORT))


# --- What the GPU machines' modules import ---

GPU_SIDE = (
    'models',
    'ops',
    'layers',
    'steps',
    'optim',
    'sharding',
    'system.runtime',
    'data.device_augment',
    'tools.flops',
    'tools.machine',
    'tools.step_runners',
    'tools.benchmark',
    'tools.profile_step',
)
# The GPU machines lack these (tools/benchmark.py's docstring): neither may come in.
ABSENT_THERE = ('tensorflow', 'tensorflow_datasets', 'grain', 'ml_collections')


def test_model_lrn_and_steps_import_without_tensorflow_tfds_grain_or_ml_collections():
  """In a fresh process where `import tensorflow` fails, each of these modules imports, and none
  of them brings in TensorFlow, TFDS, grain or ml_collections; a failure names the culprit."""
  code = textwrap.dedent(f"""
      import importlib, json, sys
      sys.modules['tensorflow'] = None  # any `import tensorflow` now fails
      found = {{}}
      for name in {GPU_SIDE!r}:
        importlib.import_module('alexnet_jax.' + name)
        loaded = [m for m, v in sys.modules.items() if v is not None]
        for absent in {ABSENT_THERE!r}:
          if any(m == absent or m.startswith(absent + '.') for m in loaded):
            found.setdefault(absent, name)  # the first module after which it was there
      print(json.dumps(found))
      """)
  out = subprocess.run(
      [sys.executable, '-c', code], capture_output=True, text=True, timeout=120, cwd=REPO
  )
  assert out.returncode == 0, out.stderr[-3000:]
  found = json.loads(out.stdout.strip().splitlines()[-1])
  assert found == {}, f'imported (with the module that first brought it in): {found}'


# --- The wheel ---


def _run(args, **kwargs):
  out = subprocess.run(
      [str(a) for a in args], capture_output=True, text=True, timeout=300, **kwargs
  )
  assert out.returncode == 0, (args, out.stdout[-3000:], out.stderr[-3000:])
  return out


NOTEBOOK_RUNNER = r"""
import sys
import nbformat
from nbclient import NotebookClient
notebook, cwd, output = sys.argv[1:]
nb = nbformat.read(notebook, as_version=4)
# One more cell: the kernel says which interpreter and which alexnet_jax it runs.
nb.cells.append(nbformat.v4.new_code_cell(
    'import sys, alexnet_jax; print("kernel:", sys.executable, alexnet_jax.__file__)'))
NotebookClient(nb, timeout=600, kernel_name='python3',
               resources={'metadata': {'path': cwd}}).execute()
with open(output, 'w') as f:
  f.write('\n'.join(o.get('text', '') for cell in nb.cells if cell.cell_type == 'code'
                    for o in cell.get('outputs', [])))
"""


@pytest.mark.slow
def test_the_wheel_installs_trains_and_runs_the_notebook(tiny_data_dir, tmp_path):
  """A wheel of the repository, installed into a fresh venv that sees this environment's
  third-party packages but not its editable alexnet_jax: from outside the repository, the
  installed package and configs import from the venv, the command line trains with the installed
  quickstart config, and the notebook runs in a kernel of the venv's interpreter."""
  # Build from a copy, so the build's egg-info and build/ stay out of the repository.
  source = tmp_path / 'source'
  shutil.copytree(
      REPO,
      source,
      symlinks=True,
      ignore=shutil.ignore_patterns(
          '.git',
          '.venv',
          '__pycache__',
          '*.egg-info',
          'build',
          'dist',
          '.pytest_cache',
          'runs',
          'workdir*',
          '.whl',
          '.ipynb_checkpoints',
      ),
  )
  pip = ['-m', 'pip', '--disable-pip-version-check']
  _run(
      [
          sys.executable,
          *pip,
          'wheel',
          '--no-deps',
          '--no-build-isolation',
          '--no-index',
          '-w',
          tmp_path / 'wheels',
          source,
      ]
  )
  (wheel,) = (tmp_path / 'wheels').iterdir()

  venv = tmp_path / 'venv'
  _run([sys.executable, '-m', 'venv', '--without-pip', venv])
  python = venv / 'bin' / 'python'
  site = _run([python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'])
  site = os.path.realpath(site.stdout.strip())
  # A directory named in a .pth file joins sys.path, but its own .pth files are not processed:
  # this environment's packages, without the editable install's finder.
  ours = {sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib']}
  with open(os.path.join(site, 'parent_environment.pth'), 'w') as f:
    f.write(''.join(f'{path}\n' for path in sorted(ours)))

  env = dict(
      os.environ,
      PYTHONPATH='',
      PIP_NO_INDEX='1',
      ALEXNET_JAX_TINY='1',
      ALEXNET_JAX_DATA_DIR=tiny_data_dir,
      ALEXNET_JAX_WORKDIR=str(tmp_path / 'nb_run'),
      IPYTHONDIR=str(tmp_path / 'ipython'),
      JUPYTER_PATH='',
      JUPYTER_CONFIG_DIR=str(tmp_path / 'jupyter' / 'config'),
      JUPYTER_DATA_DIR=str(tmp_path / 'jupyter' / 'data'),
      JUPYTER_RUNTIME_DIR=str(tmp_path / 'jupyter' / 'runtime'),
  )
  outside = tmp_path / 'elsewhere'
  outside.mkdir()
  run = lambda *args: _run([python, *args], cwd=outside, env=env)  # noqa: E731
  run(*pip, 'install', '--no-deps', '--no-index', '--ignore-installed', wheel)

  where = json.loads(
      run(
          '-c',
          textwrap.dedent("""
      import json, sys
      import alexnet_jax, alexnet_jax.configs
      finders = [getattr(f, '__name__', type(f).__name__) for f in sys.meta_path]
      print(json.dumps({'package': alexnet_jax.__file__, 'configs': alexnet_jax.configs.__file__,
                        'editable': [n for n in finders + list(sys.modules) if 'ditable' in n]}))
      """),
      ).stdout
  )
  assert where['editable'] == [], where  # the editable install's finder stayed out
  for name in ('package', 'configs'):
    assert os.path.realpath(where[name]).startswith(site + os.sep), where
  configs_dir = os.path.dirname(where['configs'])

  workdir = tmp_path / 'run'
  run(
      '-m',
      'alexnet_jax.main',
      f'--config={configs_dir}/quickstart.py:tiny',
      f'--workdir={workdir}',
      f'--config.data_dir={tiny_data_dir}',
      '--config.num_train_steps=2',
      '--config.eval_every_steps=2',
      '--config.checkpoint_every_steps=2',
  )
  assert os.listdir(workdir / 'checkpoints') == ['2']

  # nbclient in the venv's interpreter: the python3 kernel it starts is that interpreter.
  output = tmp_path / 'notebook_output.txt'
  run(
      '-c', NOTEBOOK_RUNNER, source / 'experiments' / '01_train_and_evaluate.ipynb', outside, output
  )
  text = output.read_text()
  assert 'step 6: validation top-1 error' in text, text[-3000:]
  assert 'Process tuning:' in text  # the first cell tunes the process and says how
  assert 'conv1  (64, 15, 15, 12) + (64, 15, 15, 12)' in text  # 67 px: ceil(56/4)+1; per tower
  assert 'confusion matrix' in text
  assert f'kernel: {python} ' in text, text[-3000:]
  kernel_package = text.split(f'kernel: {python} ')[1].split()[0]
  assert os.path.realpath(kernel_package).startswith(site + os.sep), kernel_package
  assert sorted(os.listdir(tmp_path / 'nb_run' / 'checkpoints')) == ['3', '6']


def test_the_tree_is_formatted_with_the_house_style():
  """pyink with pyproject.toml's settings (2-space indents, single quotes, 100 columns) would
  change nothing: one house style. `pyink alexnet_jax configs tests` fixes a failure."""
  out = subprocess.run(
      [sys.executable, '-m', 'pyink', '--check', 'alexnet_jax', 'configs', 'tests'],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert out.returncode == 0, out.stderr[-3000:]
