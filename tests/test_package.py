"""Packaging: the console scripts of pyproject.toml exist, the dependencies are lower bounds and
requirements.txt exact pins. (The package's structure: tests/test_package_structure.py.)"""
import importlib
import os
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject():
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    return tomllib.load(f)


def test_console_scripts_and_dependencies():
  project = _pyproject()['project']
  scripts = project['scripts']
  assert sorted(scripts) == ['comic-jax-audit', 'comic-jax-benchmark', 'comic-jax-convert',
                             'comic-jax-predict', 'comic-jax-train']
  for target in scripts.values():
    module, function = target.split(':')
    assert callable(getattr(importlib.import_module(module), function))
  # Lower bounds only (no pin that would replace a preinstalled stack); TensorFlow is an extra.
  assert all('==' not in d for d in project['dependencies'])
  assert not any(d.startswith('tensorflow') and not d.startswith('tensorflow-datasets')
                 for d in project['dependencies'])
  assert project['optional-dependencies']['coco'][0].startswith('tensorflow')
  with open(os.path.join(ROOT, 'requirements.txt')) as f:
    pins = [line.split('#')[0].strip() for line in f if line.split('#')[0].strip()]
  assert pins and all('==' in p for p in pins)       # exact pins for reproduction and CI
