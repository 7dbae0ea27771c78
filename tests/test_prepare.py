"""`python -m alexnet_jax.tools.prepare`: folders and CSVs of images become TFDS datasets.

The references are the files the tests write themselves: each image is one flat colour, so its
label, its file and its pixels can be checked after any JPEG round trip, resize or crop. Datasets
are read back in a fresh process that never imports the builder (as training does), and that
process must not import TensorFlow.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image
import tensorflow_datasets as tfds

from alexnet_jax.tools import prepare
from alexnet_jax.data.datasets import image_folder, synthetic_shapes
from alexnet_jax.errors import ConfigError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Sorted as Python sorts strings: capitals first. The test's own order, not the code's.
FOLDER_CLASSES = ['Moth', 'ant', 'zebra']
PER_CLASS = 10
BAD = {'ant/empty.jpg': b'', 'zebra/text.jpg': b'not an image at all'}  # plus a truncated file


def _colour(label: int, i: int) -> tuple[int, int, int]:
  return (20 + 60 * label, 30 + 20 * i, 200 - 15 * i)


def _write(path: str, colour, mode: str = 'RGB') -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  rgb = Image.new('RGB', (40, 30), colour)
  (rgb if mode == 'RGB' else rgb.convert(mode)).save(path)


def _make_folder(root: str) -> dict[str, tuple[int, tuple]]:
  """ROOT/<class>/<image>; returns {relative path: (label, colour)} of the good images."""
  good = {}
  for label, name in enumerate(FOLDER_CLASSES):
    for i in range(PER_CLASS):
      rel = f'{name}/{i:02d}.jpg'
      _write(os.path.join(root, rel), _colour(label, i))
      good[rel] = (label, _colour(label, i))
  # Not errors: converted to RGB (grayscale, CMYK, transparent PNG on white).
  _write(os.path.join(root, 'Moth/gray.png'), (90, 90, 90), 'L')
  good['Moth/gray.png'] = (0, (90, 90, 90))
  _write(os.path.join(root, 'ant/cmyk.jpg'), (40, 160, 220), 'CMYK')
  good['ant/cmyk.jpg'] = (1, (40, 160, 220))
  rgba = Image.new('RGBA', (40, 30), (0, 0, 0, 0))  # fully transparent: white after compositing
  rgba.save(os.path.join(root, 'zebra/clear.png'))
  good['zebra/clear.png'] = (2, (255, 255, 255))
  for rel, data in BAD.items():
    with open(os.path.join(root, rel), 'wb') as f:
      f.write(data)
  with open(os.path.join(root, 'Moth/00.jpg'), 'rb') as f:
    whole = f.read()
  with open(os.path.join(root, 'zebra/cut.jpg'), 'wb') as f:
    f.write(whole[: len(whole) // 2])
  with open(os.path.join(root, 'ant/notes.txt'), 'w') as f:
    f.write('ignored: not an image extension')
  return good


def _make_csv(root: str) -> tuple[dict, dict]:
  """iFood 2019's layout: train_set/, val_set/, train_labels.csv, class_list.txt."""
  classes = ['macaron', 'beignet', 'cruller', 'cockle_food']
  os.makedirs(root)
  with open(os.path.join(root, 'class_list.txt'), 'w') as f:
    f.writelines(f'{i} {c}\n' for i, c in enumerate(classes))
  splits = {}
  for split, n in (('train', 24), ('val', 8)):
    rows, expected = ['img_name,label'], {}
    for i in range(n):
      label = (i * 7) % len(classes)
      file = f'{split}_{i:04d}.jpg'
      _write(os.path.join(root, f'{split}_set', file), _colour(label, i % 8))
      # Validation rows name their class (also accepted); train rows give its index.
      rows.append(f'{file},{classes[label] if split == "val" else label}')
      expected[file] = (label, _colour(label, i % 8))
    rows.append(f'{split}_gone.jpg,1')  # missing: under the threshold, reported and skipped
    with open(os.path.join(root, f'{split}_labels.csv'), 'w') as f:
      f.write('\n'.join(rows) + '\n')
    splits[split] = expected
  return classes, splits


_READER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow_datasets as tfds
    out = {}
    for name, data_dir in json.loads(sys.argv[1]):
      builder = tfds.builder(name, data_dir=data_dir)
      out[name] = {'classes': builder.info.features['label'].names}
      for split in builder.info.splits:
        out[name][split] = [
            [x['file_name'].decode(), int(x['label']), list(x['image'].shape),
             x['image'].reshape(-1, 3).mean(0).tolist(), float(x['image'].reshape(-1, 3).std(0).max())]
            for x in tfds.data_source(name, split=split, data_dir=data_dir)]
    out['modules'] = sorted(m for m in sys.modules
                            if m.split('.')[0] in ('tensorflow', 'alexnet_jax'))
    print(json.dumps(out))
""")


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  """A folder dataset prepared by the command line, a CSV one by `prepare_images`; read back."""
  tmp = tmp_path_factory.mktemp('prepare')
  data_dir = str(tmp / 'tfds')
  folder = str(tmp / 'My Insects' / 'train')  # the name comes from the parent: my_insects
  good = _make_folder(folder)
  cli = subprocess.run(
      [
          sys.executable,
          '-m',
          'alexnet_jax.tools.prepare',
          f'--folder={folder}',
          f'--data_dir={data_dir}',
          '--validation_fraction=0.3',
          '--seed=3',
          '--resize=0',
      ],
      capture_output=True,
      text=True,
      cwd=REPO_ROOT,
      timeout=120,
  )
  assert cli.returncode == 0, cli.stderr[-3000:]
  ifood = str(tmp / 'ifood2019')
  classes, csv_splits = _make_csv(ifood)
  csv_report = prepare.prepare_images(
      csv=f'{ifood}/train_labels.csv',
      images=f'{ifood}/train_set',
      classes=f'{ifood}/class_list.txt',
      val_csv=f'{ifood}/val_labels.csv',
      val_images=f'{ifood}/val_set',
      resize=16,
      max_missing_fraction=0.2,
      data_dir=data_dir,
  )
  read = subprocess.run(
      [
          sys.executable,
          '-c',
          _READER,
          json.dumps([['my_insects', data_dir], ['ifood2019', data_dir]]),
      ],
      capture_output=True,
      text=True,
      cwd=str(tmp),
      timeout=120,
  )  # not the repo: nothing of ours
  assert read.returncode == 0, read.stderr[-3000:]
  return dict(
      read=json.loads(read.stdout.strip().splitlines()[-1]),
      stdout=cli.stdout,
      good=good,
      folder=folder,
      data_dir=data_dir,
      classes=classes,
      csv=csv_splits,
      csv_report=csv_report,
  )


def test_folder_reads_back_without_the_builder_or_tensorflow(prepared):
  read = prepared['read']
  assert read['modules'] == []  # neither TensorFlow nor alexnet_jax in the reading process
  assert read['my_insects']['classes'] == FOLDER_CLASSES
  rows = read['my_insects']['train'] + read['my_insects']['validation']
  files = [r[0] for r in rows]
  assert sorted(files) == sorted(prepared['good'])  # complete and disjoint: each good file once
  for file, label, shape, mean, spread in rows:
    want_label, colour = prepared['good'][file]
    assert label == want_label, file
    assert shape == [30, 40, 3]  # --resize=0 keeps the size
    np.testing.assert_allclose(mean, colour, atol=4, err_msg=file)  # within JPEG error
    assert spread < 3, file  # flat, as written


def test_validation_fraction_is_stratified_and_seeded(prepared):
  val = prepared['read']['my_insects']['validation']
  per_class = np.bincount([r[1] for r in val], minlength=3)
  # The hold-out is drawn from the listed files, before decoding finds the bad ones:
  # Moth 10 + gray; ant 10 + cmyk + empty; zebra 10 + clear + text + cut.
  held = np.round(0.3 * np.array([11, 12, 13])).astype(int)
  for s in _report(prepared['data_dir'], 'my_insects')['skipped']:
    if s['split'] == 'validation':
      per_class[FOLDER_CLASSES.index(s['file'].split('/')[0])] += 1
  np.testing.assert_array_equal(per_class, held)
  # The command's hold-out is the function's, for the same seed; another seed, another split.
  examples, _, _ = image_folder.list_folder(prepared['folder'])
  _, same = image_folder.split_validation(examples, 0.3, seed=3)
  assert {e.file_name for e in same} - set(BAD) - {'zebra/cut.jpg'} == {r[0] for r in val}
  _, other = image_folder.split_validation(examples, 0.3, seed=4)
  assert {e.file_name for e in other} != {e.file_name for e in same}


def test_split_validation_counts_disjoint_deterministic():
  examples = [
      image_folder.Example(f'/x/{c}/{i}', c, f'{c}/{i}') for c in range(4) for i in range(5 + 3 * c)
  ]
  train, val = image_folder.split_validation(examples[::-1], 0.25, seed=0)  # order-free
  train2, val2 = image_folder.split_validation(examples, 0.25, seed=0)
  assert [e.file_name for e in val] == [e.file_name for e in val2]
  assert sorted(e.file_name for e in train + val) == sorted(e.file_name for e in examples)
  for c in range(4):
    n = 5 + 3 * c
    assert sum(e.label == c for e in val) == round(0.25 * n)
  assert len(train2) == len(train)


def _report(data_dir, name):
  with open(os.path.join(data_dir, name, '1.0.0', image_folder.REPORT_FILE)) as f:
    return json.load(f)


def test_bad_files_are_skipped_counted_and_listed(prepared):
  report = _report(prepared['data_dir'], 'my_insects')
  reasons = {s['file']: s['reason'] for s in report['skipped']}
  assert set(reasons) == set(BAD) | {'zebra/cut.jpg'}
  assert reasons['ant/empty.jpg'] == 'empty file'
  assert 'truncated' in reasons['zebra/cut.jpg'].lower()
  assert report['num_skipped'] == 3 and report['ignored'] == ['ant/notes.txt']
  assert sum(report['examples'].values()) == len(prepared['good'])
  assert 'Skipped 3 bad files' in prepared['stdout']
  assert (
      f'--config.dataset=my_insects --config.data_dir={prepared["data_dir"]} '
      '--config.model.num_classes=3'
  ) in prepared['stdout']


def test_csv_ifood_layout(prepared):
  read, want = prepared['read']['ifood2019'], prepared['csv']
  assert read['classes'] == prepared['classes']  # the class list's order, not sorted
  for split, source in (('train', 'train'), ('validation', 'val')):
    assert sorted(r[0] for r in read[split]) == sorted(want[source])
    for file, label, shape, mean, _ in read[split]:
      assert label == want[source][file][0], file
      assert shape == [16, 16, 3]  # --resize=16: the central square, 16 pixels
      np.testing.assert_allclose(mean, want[source][file][1], atol=4, err_msg=file)
  report = prepared['csv_report']
  assert sorted(s['file'] for s in report['skipped']) == ['train_gone.jpg', 'val_gone.jpg']
  assert report['num_classes'] == 4


def test_class_list_formats(tmp_path):
  (tmp_path / 'plain.txt').write_text('b\na\n\nc\n')
  (tmp_path / 'indexed.txt').write_text('1 apple pie\n0 baby back ribs\n2 baklava\n')
  assert image_folder.read_class_list(str(tmp_path / 'plain.txt')) == ['b', 'a', 'c']
  assert image_folder.read_class_list(str(tmp_path / 'indexed.txt')) == [
      'baby back ribs',
      'apple pie',
      'baklava',
  ]


def test_classes_fix_folder_order_and_subset(tmp_path):
  root = str(tmp_path / 'f')
  for c in ('a', 'b', 'c'):
    _write(f'{root}/{c}/1.jpg', (1, 2, 3))
  (tmp_path / 'classes.txt').write_text('c\na\n')
  examples, names, _ = image_folder.list_folder(
      root, image_folder.read_class_list(str(tmp_path / 'classes.txt'))
  )
  assert names == ['c', 'a']
  assert {(e.file_name, e.label) for e in examples} == {('c/1.jpg', 0), ('a/1.jpg', 1)}


def _bad_input(tmp: str):
  """(call, words the message must contain): every one a ConfigError naming the fix."""
  os.makedirs(f'{tmp}/empty')
  _write(f'{tmp}/loose/1.jpg', (1, 2, 3))
  _write(f'{tmp}/imgs/a.jpg', (1, 2, 3))
  _write(f'{tmp}/imgs/b.jpg', (1, 2, 3))
  _write(f'{tmp}/ok/a/1.jpg', (1, 2, 3))
  with open(f'{tmp}/missing.csv', 'w') as f:
    f.write('name,label\na.jpg,0\nnot_there.jpg,1\nnor_this.jpg,1\n')
  with open(f'{tmp}/labels.csv', 'w') as f:
    f.write('a.jpg,0\nb.jpg,7\n')
  with open(f'{tmp}/names.csv', 'w') as f:
    f.write('a.jpg,cat\nb.jpg,cta\n')
  with open(f'{tmp}/classes.txt', 'w') as f:
    f.write('cat\ndog\n')
  with open(f'{tmp}/twice.txt', 'w') as f:
    f.write('cat\ncat\n')
  cls = f'{tmp}/classes.txt'
  return [
      (lambda: prepare.prepare_images(folder=f'{tmp}/nowhere'), ['is not a folder', '--folder']),
      (lambda: prepare.prepare_images(folder=f'{tmp}/empty'), ['no images', 'ROOT/<class name>']),
      (lambda: prepare.prepare_images(folder=f'{tmp}/loose'), ['directly in it', 'subfolder']),
      (
          lambda: prepare.prepare_images(folder=f'{tmp}/imgs', classes=cls),
          ["['cat', 'dog']", 'class list'],
      ),
      (
          lambda: prepare.prepare_images(csv=f'{tmp}/missing.csv', images=f'{tmp}/imgs'),
          ['2 of the 3', 'not_there.jpg', '--images', '--max_missing_fraction=0.667'],
      ),
      (
          lambda: prepare.prepare_images(
              csv=f'{tmp}/labels.csv', images=f'{tmp}/imgs', classes=cls
          ),
          ['lines [2]', '0 to 1', "['cat', 'dog']", '--classes'],
      ),
      (
          lambda: prepare.prepare_images(csv=f'{tmp}/names.csv', images=f'{tmp}/imgs', classes=cls),
          ['lines [2]', "['cat', 'dog']"],
      ),
      (
          lambda: prepare.prepare_images(csv=f'{tmp}/nope.csv', images=f'{tmp}/imgs'),
          ['does not exist', 'train_labels.csv'],
      ),
      (
          lambda: prepare.prepare_images(folder=f'{tmp}/imgs', classes=f'{tmp}/twice.txt'),
          ["['cat']", 'once'],
      ),
      (
          lambda: prepare.prepare_images(folder=f'{tmp}/ok', name='cifar10'),
          ['already a TFDS dataset', '--name=cifar10_images'],
      ),
      (lambda: prepare.prepare_images(folder=f'{tmp}/ok', name='My-Set'), ['lower-case']),
      (lambda: prepare.prepare_images(folder=f'{tmp}/ok', validation_fraction=1.0), ['[0, 1)']),
      (
          lambda: prepare.prepare_tfds('cifar100x', f'{tmp}/tfds'),
          ["no dataset 'cifar100x'", "'cifar100'", '--folder'],
      ),
      (
          lambda: prepare.prepare_tfds('imagenet2012', f'{tmp}/tfds'),
          [
              'ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar',
              f'{tmp}/tfds/downloads/manual',
              '--manual_dir',
          ],
      ),
  ]


def test_bad_input_is_one_paragraph_naming_the_fix(tmp_path):
  for i, (call, words) in enumerate(_bad_input(str(tmp_path))):
    with pytest.raises(ConfigError) as e:
      call()
    message = str(e.value)
    assert '\n' not in message, (i, message)
    for w in words:
      assert w in message, (i, w, message)


def test_command_line_error_exits_2_without_traceback(tmp_path):
  out = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.tools.prepare', f'--folder={tmp_path}'],
      capture_output=True,
      text=True,
      cwd=REPO_ROOT,
      timeout=120,
  )
  assert out.returncode == 2
  assert 'Traceback' not in out.stderr
  assert 'Error: ' in out.stderr and 'ROOT/<class name>/<image>.jpg' in out.stderr


def test_tfds_name_builds_the_built_in_dataset(tmp_path):
  report = prepare.prepare_tfds('synthetic_shapes/tiny', str(tmp_path))
  assert report['examples'] == {'train': 320, 'validation': 160} and report['num_classes'] == 10
  version = str(synthetic_shapes.SyntheticShapes.VERSION)
  assert os.path.isdir(tmp_path / 'synthetic_shapes' / 'tiny' / version)


@pytest.mark.slow
def test_training_runs_on_a_prepared_folder(prepared, tmp_path, one_device, tiny_config):
  from alexnet_jax import train

  config = tiny_config(prepared['data_dir'])
  config.dataset, config.model.num_classes = 'my_insects', 3
  config.num_train_steps = config.eval_every_steps = config.checkpoint_every_steps = 2
  state, metrics = train.train_and_evaluate(config, str(tmp_path / 'run'), one_device)
  assert int(state.step) == 2 and np.isfinite(metrics['loss'])


def _read_splits(name: str, data_dir: str) -> dict[str, list]:
  """{split: sorted (file, label, mean colour)} of a prepared dataset, read as training does."""
  builder = tfds.builder(name, data_dir=data_dir)
  return {
      split: sorted(
          (x['file_name'].decode(), int(x['label']), x['image'].reshape(-1, 3).mean(0).tolist())
          for x in tfds.data_source(name, split=split, data_dir=data_dir)
      )
      for split in builder.info.splits
  }


def test_val_folder_is_the_validation_split_and_overwrite_rebuilds(tmp_path):
  """`--val_folder`: its images, and only those, make the validation split. A dataset already
  prepared is kept, saying so, unless `--overwrite`, which rebuilds it from the folders as they
  are now. (The first build is `prepare_images`'s, the function the command calls.)"""
  train, val, data_dir = str(tmp_path / 'train'), str(tmp_path / 'val'), str(tmp_path / 'tfds')
  classes = ['cat', 'dog']

  def images(root, counts, first):
    written = {}
    for label, (name, n) in enumerate(zip(classes, counts, strict=True)):
      for i in range(first, first + n):
        _write(f'{root}/{name}/{i:02d}.jpg', _colour(label, i))
        written[f'{name}/{i:02d}.jpg'] = (label, _colour(label, i))
    return written

  train_images = images(train, (4, 3), 0)
  val_images = images(val, (2, 1), 4)  # other files and colours than train's
  prepare.prepare_images(
      folder=train, val_folder=val, name='pet_photos', resize=16, data_dir=data_dir
  )
  first = _read_splits('pet_photos', data_dir)
  val_images.update(images(val, (0, 1), 5))  # then the validation folder gets one more dog

  def command(*more):
    out = subprocess.run(
        [
            sys.executable,
            '-m',
            'alexnet_jax.tools.prepare',
            f'--folder={train}',
            f'--val_folder={val}',
            '--name=pet_photos',
            '--resize=16',
            f'--data_dir={data_dir}',
            *more,
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout

  kept = command()
  assert (
      f"Prepared pet_photos in {data_dir}: {{'train': 7, 'validation': 3}} examples, already "
      'prepared (--overwrite rebuilds it).'
  ) in kept, kept
  assert _read_splits('pet_photos', data_dir) == first
  rebuilt = command('--overwrite')
  assert "{'train': 7, 'validation': 4} examples." in rebuilt, rebuilt
  read = _read_splits('pet_photos', data_dir)
  # Every train image in train (none held out), the validation split exactly the val folder's.
  for split, want in (('train', train_images), ('validation', val_images)):
    assert [(f, label) for f, label, _ in read[split]] == sorted(
        (f, label) for f, (label, _) in want.items()
    ), split
    for file, _, mean in read[split]:
      np.testing.assert_allclose(mean, want[file][1], atol=4, err_msg=file)


def test_an_overwrite_that_fails_keeps_the_dataset_it_was_replacing(tmp_path, monkeypatch):
  """`--overwrite` moves the prepared dataset aside while it writes the new one: a write that
  dies (here: the second image folder's decoding) puts the old one back, readable as before."""
  train, data_dir = str(tmp_path / 'train'), str(tmp_path / 'tfds')
  for label, name in enumerate(['cat', 'dog']):
    for i in range(3):
      _write(f'{train}/{name}/{i:02d}.jpg', _colour(label, i))
  prepare.prepare_images(folder=train, name='pets', resize=16, data_dir=data_dir)
  before = _read_splits('pets', data_dir)

  def dies(self, *args, **kwargs):
    raise RuntimeError('disk full')

  monkeypatch.setattr(image_folder.builder.LocalBuilder, 'download_and_prepare', dies)
  with pytest.raises(RuntimeError, match='disk full'):
    prepare.prepare_images(folder=train, name='pets', resize=16, data_dir=data_dir, overwrite=True)
  monkeypatch.undo()
  assert _read_splits('pets', data_dir) == before
  assert not [p for p in os.listdir(f'{data_dir}/pets') if p.endswith('.replaced')]
  # And a successful overwrite leaves nothing aside.
  prepare.prepare_images(folder=train, name='pets', resize=16, data_dir=data_dir, overwrite=True)
  assert _read_splits('pets', data_dir) == before
  assert not [p for p in os.listdir(f'{data_dir}/pets') if p.endswith('.replaced')]
