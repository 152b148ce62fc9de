"""`python -m comic_jax.predict` (`comic-jax-predict`): class probabilities and labels for new
images, or (`--mode=export`) a self-contained model folder with model.onnx.

    python -m comic_jax.predict --workdir=runs/demo --input=photos/ --output=predictions.csv
    python -m comic_jax.predict --workdir=runs/demo --input=photos/ --recursive --output=p.csv
    python -m comic_jax.predict --workdir=runs/demo --input=arrays.npz --output=predictions.json
    python -m comic_jax.predict --workdir=runs/demo --mode=export --output=runs/demo/export

The API behind it (`comic_jax.load`, the inputs, the outputs): comic_jax/inference/predict.py.
"""
import os

from absl import flags

from comic_jax.cli import prologue
from comic_jax.errors import require

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'A run directory (or an exported folder to predict with).')
  flags.DEFINE_enum('mode', 'predict', ['predict', 'export'], 'predict: scores and labels of '
                    '--input; export: write a self-contained model folder to --output.')
  flags.DEFINE_string('input', None, 'Image folder, image file or .npz (x: images or features).')
  flags.DEFINE_string('output', None, 'predict: .csv or .json file; export: folder '
                      '(default <workdir>/export).')
  flags.DEFINE_string('model', None, 'Reported model to use (default: the run\'s first, e.g. '
                      'COMIC; also "Head Model", "Tail Model").')
  flags.DEFINE_string('threshold', 'auto', "'auto' (validation thresholds if the run has "
                      "thresholds.json, else 0.5), 'val', or a number for every class.")
  flags.DEFINE_bool('recursive', False, 'With a folder as --input: also the images of its '
                    'sub-folders (rows named by their relative paths).')
  flags.DEFINE_integer('batch_size', 0, 'Images per batch (0: the run\'s eval_batch_size).')
  flags.mark_flags_as_required(['workdir'])


def main(argv):
  prologue.no_arguments(argv)
  prologue.quiet_logs()
  from comic_jax.inference import export, predict
  with prologue.user_errors():
    if FLAGS.mode == 'export':
      out = export.export_model(FLAGS.workdir, FLAGS.output or
                                os.path.join(FLAGS.workdir, 'export'))
      print(f'exported the model to {out}')
      return
    predict.use_compilation_cache(FLAGS.workdir)
    require(bool(FLAGS.input), '--input is required (an image folder, an image or an .npz)')
    require(bool(FLAGS.output), '--output is required (a .csv or .json file)')
    count, model = predict.predict_files(
        FLAGS.workdir, FLAGS.input, FLAGS.output, recursive=FLAGS.recursive, model=FLAGS.model,
        threshold=FLAGS.threshold, batch_size=FLAGS.batch_size or None)
    print(f'{count} images -> {FLAGS.output} ({model})')


def run() -> None:
  define_flags()
  prologue.run(main, config_file=False)
