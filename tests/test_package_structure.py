"""The package's structure, read from its source with `ast` (nothing is imported): imports that
run one way, no private name used from another module, short functions and modules, few modules
at the top of the package."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ('comic_jax', 'configs')      # what pyproject.toml ships
MAX_FUNCTION_LINES = 60                  # outside configs/ (a get_config lists every field)
MAX_MODULE_LINES = 400                   # in comic_jax/
MAX_TOP_MODULES = 12                     # modules at the top of comic_jax/ (the rest in packages)


class Package:
  """Parsed modules: `sources` is {dotted name: (is a package's __init__, source text)}."""

  def __init__(self, sources):
    self.packages = {name for name, (is_package, _) in sources.items() if is_package}
    self.trees = {name: ast.parse(text, name) for name, (_, text) in sources.items()}
    self.lines = {name: len(text.splitlines()) for name, (_, text) in sources.items()}


def read_package(root: str = ROOT) -> Package:
  """Every .py file of PACKAGES under `root`."""
  sources = {}
  for package in PACKAGES:
    for folder, _, files in os.walk(os.path.join(root, package)):
      for name in files:
        if name.endswith('.py'):
          path = os.path.join(folder, name)
          dotted = os.path.relpath(path, root)[:-3].replace(os.sep, '.')
          with open(path) as f:
            sources[dotted.removesuffix('.__init__')] = (name == '__init__.py', f.read())
  return Package(sources)


def _resolve(package: Package, module: str, node: ast.ImportFrom) -> str:
  """The absolute module name of a `from ... import` (relative imports resolved)."""
  if not node.level:
    return node.module or ''
  parts = module.split('.')
  base = parts if module in package.packages else parts[:-1]
  base = base[:len(base) - node.level + 1]
  return '.'.join(base + ([node.module] if node.module else []))


def imported_modules(package: Package, module: str):
  """({local name: module} of the package's modules that `module` binds by an import, {every
  module it imports}), counting imports anywhere in it (inside functions too)."""
  bound, edges = {}, set()
  for node in ast.walk(package.trees[module]):
    if isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name in package.trees:
          edges.add(alias.name)
          if alias.asname:
            bound[alias.asname] = alias.name
    elif isinstance(node, ast.ImportFrom):
      source = _resolve(package, module, node)
      for alias in node.names:
        full = f'{source}.{alias.name}'
        if full in package.trees:                # `from comic_jax import train`
          edges.add(full)
          bound[alias.asname or alias.name] = full
        elif source in package.trees:            # `from comic_jax.errors import require`
          edges.add(source)
  edges.discard(module)
  return bound, edges


def import_cycles(package: Package):
  """{cycle: its modules} for the strongly connected components (more than one module) of the
  import graph, each a sorted tuple (Tarjan's algorithm)."""
  graph = {m: imported_modules(package, m)[1] for m in package.trees}
  index, low, stack, on_stack, cycles = {}, {}, [], set(), {}

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        cycles[tuple(sorted(component))] = len(component)

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return cycles


def _private(name: str) -> bool:
  return name.startswith('_') and not (name.startswith('__') and name.endswith('__'))


def private_uses(package: Package):
  """{'module: other._name': line} for every private name of another of the package's modules
  used in a module: `from other import _name`, or `other._name` on a module bound by an
  import."""
  found = {}
  for module, tree in package.trees.items():
    bound, _ = imported_modules(package, module)
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom):
        source = _resolve(package, module, node)
        if source in package.trees and source != module:
          found.update({f'{module}: {source}.{a.name}': node.lineno for a in node.names
                        if _private(a.name)})
      elif (isinstance(node, ast.Attribute) and _private(node.attr)
            and isinstance(node.value, ast.Name) and node.value.id in bound
            and bound[node.value.id] != module):
        found[f'{module}: {bound[node.value.id]}.{node.attr}'] = node.lineno
  return found


def long_functions(package: Package):
  """{'module.function': lines} for every function (nested ones too) over MAX_FUNCTION_LINES,
  outside configs/. A function's lines run from its `def` to its last line."""
  found = {}
  for module, tree in package.trees.items():
    if module.split('.')[0] == 'configs':
      continue
    for node in ast.walk(tree):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        lines = node.end_lineno - node.lineno + 1
        if lines > MAX_FUNCTION_LINES:
          found[f'{module}.{node.name}'] = lines
  return found


def long_modules(package: Package):
  """{module: lines} for every module of comic_jax/ over MAX_MODULE_LINES."""
  return {module: n for module, n in package.lines.items()
          if module.split('.')[0] == 'comic_jax' and n > MAX_MODULE_LINES}


def crowded_top(package: Package):
  """{'comic_jax': the number of its top-level modules} when over MAX_TOP_MODULES (__init__
  counted)."""
  top = [m for m in package.trees if m.count('.') == 1 and m.startswith('comic_jax.')
         and m not in package.packages]
  return {'comic_jax': len(top) + 1} if len(top) + 1 > MAX_TOP_MODULES else {}


RULES = {'import cycles': import_cycles,
         'private names used across modules': private_uses,
         f'functions over {MAX_FUNCTION_LINES} lines': long_functions,
         f'modules over {MAX_MODULE_LINES} lines': long_modules,
         f'over {MAX_TOP_MODULES} modules at the top of comic_jax/': crowded_top}
PACKAGE = read_package()


@pytest.mark.parametrize('rule', RULES)
def test_no_offender(rule):
  assert RULES[rule](PACKAGE) == {}, rule


def test_the_scans_find_what_they_look_for():
  """A made-up package with one offender of each kind (and look-alikes that are fine)."""
  body = '\n'.join(f'  x{i} = {i}' for i in range(MAX_FUNCTION_LINES - 1))
  sources = {
      'comic_jax': (True, ''),
      'comic_jax.a': (False, 'from comic_jax import b\n_hidden = 1\n'),
      'comic_jax.b': (False, 'def f():\n  from comic_jax import a\n  return a._hidden\n'),
      'comic_jax.c': (False, 'from comic_jax.a import _hidden\nimport comic_jax.a as aa\n'
                             'y = aa.__name__\n'),
      'comic_jax.d': (False, f'def long():\n{body}\n  return 0\n\ndef short():\n{body}\n'),
      'comic_jax.e': (False, 'from . import d\n' + 'x = 1\n' * MAX_MODULE_LINES),
      'comic_jax.f': (False, 'from .a import b\n'),
      'configs.g': (False, f'def get_config():\n{body}\n  y = 1\n  return 0\n'),
  }
  package = Package(sources)
  assert import_cycles(package) == {('comic_jax.a', 'comic_jax.b'): 2}
  assert imported_modules(package, 'comic_jax.f')[1] == {'comic_jax.a'}
  assert private_uses(package) == {'comic_jax.b: comic_jax.a._hidden': 3,
                                   'comic_jax.c: comic_jax.a._hidden': 1}
  assert long_functions(package) == {'comic_jax.d.long': MAX_FUNCTION_LINES + 1}
  assert long_modules(package) == {'comic_jax.e': MAX_MODULE_LINES + 1}
  assert crowded_top(package) == {}
  crowded = Package({**sources, **{f'comic_jax.m{i}': (False, '') for i in range(MAX_TOP_MODULES)},
                     'comic_jax.sub': (True, ''), 'comic_jax.sub.inner': (False, '')})
  assert crowded_top(crowded) == {'comic_jax': MAX_TOP_MODULES + 6 + 1}
