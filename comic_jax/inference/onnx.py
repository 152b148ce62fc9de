"""model.onnx: a trained model as an ONNX graph, for onnxruntime and the other ONNX runtimes (no
JAX needed to use it). Written by the export (`export.export_model`) next to the `jax.export`
artifact when the optional `onnx` package is installed (`pip install 'comic-jax[onnx]'`).

The graph: input `images` uint8 (batch, H, W, 3), images already brought to the model's input
as model.json's `preprocessing` says (the shorter side resized, then the central H x W:
`images.model_input`); `features` float32 (batch, D) for a feature-vector run; output
`probabilities` float32 (batch, C) of the reported model; the batch size is symbolic. The
variables are the graph's initializers.

How: the prediction function is traced to a jaxpr with a symbolic batch size, and each of its
operations is written as the ONNX operator(s) that compute the same (`_RULES`), opset 18. An
operation without a rule stops the conversion with `Unsupported` naming it, and the export
goes on without model.onnx. Why not `jax2onnx` (0.17.1, tried first): it converted this
project's frozen EfficientNet-Lite0 + COMIC+ model correctly (7e-7 from JAX in onnxruntime) but
took 202 s where this takes 2.5 s (the same loaded 2-core machine, minutes apart), and its
releases 0.13.1-0.17.1 require orbax-checkpoint<0.11.37, against this project's 0.12.8.
"""
from __future__ import annotations

import importlib.util
import string

import numpy as np

OPSET = 18
FILE = 'model.onnx'


class Unsupported(Exception):
  """An operation of the model that has no ONNX rule here; the message names it."""


def available() -> bool:
  return importlib.util.find_spec('onnx') is not None


def convert(fn, variables: dict[str, np.ndarray], input_spec, input_name: str) -> bytes:
  """The serialized ONNX model of `fn(variables, inputs) -> (batch, C) probabilities`, with
  `variables` as initializers and `input_spec` (a jax.ShapeDtypeStruct whose first dimension
  is symbolic) as the graph's input. Raises `Unsupported` for an operation without a rule."""
  import jax
  import onnx
  from onnx import helper

  names = sorted(variables)
  var_spec = {n: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype)
              for n, v in variables.items()}
  closed = jax.make_jaxpr(fn)(var_spec, input_spec)
  graph = _Graph()
  var_invars, (image_invar,) = closed.jaxpr.invars[:-1], closed.jaxpr.invars[-1:]
  for var, name in zip(var_invars, names):   # dict leaves are traced in sorted key order
    graph.names[var] = graph.initializer(np.asarray(variables[name]), name)
  graph.names[image_invar] = graph.input_name = input_name
  for var, value in zip(closed.jaxpr.constvars, closed.consts):
    graph.names[var] = graph.initializer(np.asarray(value).reshape(var.aval.shape))
  (out,) = graph.walk(closed.jaxpr, [graph.names[v] for v in closed.jaxpr.invars])
  graph.nodes.append(helper.make_node('Identity', [out], ['probabilities']))
  used = {i for node in graph.nodes for i in node.input}   # e.g. state only training reads
  graph.inits = [t for t in graph.inits if t.name in used]
  shape = ['batch', *input_spec.shape[1:]]
  (out_aval,) = closed.out_avals
  model = helper.make_model(
      helper.make_graph(
          graph.nodes, 'comic_jax', [helper.make_tensor_value_info(
              input_name, _dtype(input_spec.dtype), shape)],
          [helper.make_tensor_value_info('probabilities', _dtype(out_aval.dtype),
                                         ['batch', *out_aval.shape[1:]])],
          graph.inits),
      opset_imports=[helper.make_opsetid('', OPSET)], producer_name='comic_jax')
  model.ir_version = min(model.ir_version, 9)   # readable by onnxruntime releases since 1.16
  onnx.checker.check_model(model)
  return model.SerializeToString()


def _dtype(dtype) -> int:
  from onnx import helper
  return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _static(d) -> bool:
  return isinstance(d, (int, np.integer))


class _Graph:
  """The nodes and initializers written so far, and the ONNX name of each jaxpr variable."""

  def __init__(self):
    self.nodes, self.inits, self.names, self._count = [], [], {}, 0
    self.input_name = ''

  def fresh(self, stem: str = 't') -> str:
    self._count += 1
    return f'{stem}{self._count}'

  def initializer(self, array: np.ndarray, name: str | None = None) -> str:
    from onnx import numpy_helper
    name = name or self.fresh('c')
    self.inits.append(numpy_helper.from_array(np.array(array, order='C'), name))
    return name

  def ints(self, values) -> str:
    return self.initializer(np.asarray(list(values), np.int64))

  def node(self, op: str, inputs: list[str], **attrs) -> str:
    from onnx import helper
    out = self.fresh()
    self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
    return out

  def name_of(self, atom) -> str:
    if hasattr(atom, 'val'):     # a literal
      return self.initializer(np.asarray(atom.val, atom.aval.dtype).reshape(atom.aval.shape))
    return self.names[atom]

  def walk(self, jaxpr, in_names: list[str]) -> list[str]:
    """Writes every equation of `jaxpr` (inputs named `in_names`); the outputs' names."""
    for var, name in zip(jaxpr.invars, in_names):
      self.names[var] = name
    for eqn in jaxpr.eqns:
      prim = eqn.primitive.name
      inner = next((eqn.params[k] for k in ('jaxpr', 'call_jaxpr', 'fun_jaxpr')
                    if k in eqn.params), None)
      ins = [self.name_of(a) for a in eqn.invars]
      if inner is not None and prim not in _RULES:   # jit, custom_jvp_call, ...: inlined
        inner_jaxpr = getattr(inner, 'jaxpr', inner)
        for var, value in zip(inner_jaxpr.constvars, getattr(inner, 'consts', ())):
          self.names[var] = self.initializer(np.asarray(value).reshape(var.aval.shape))
        outs = self.walk(inner_jaxpr, ins[len(ins) - len(inner_jaxpr.invars):])
      elif prim in _RULES:
        outs = _RULES[prim](self, eqn, ins)
        outs = outs if isinstance(outs, list) else [outs]
      else:
        raise Unsupported(prim)
      for var, name in zip(eqn.outvars, outs):
        self.names[var] = name
    return [self.name_of(a) for a in jaxpr.outvars]


# ------------------------------------------------------------------------------- the rules

def _elementwise(op: str):
  return lambda g, eqn, ins: g.node(op, ins)


def _rsqrt(g, eqn, ins):
  return g.node('Reciprocal', [g.node('Sqrt', ins)])


def _log1p(g, eqn, ins):
  one = g.initializer(np.asarray(1, eqn.invars[0].aval.dtype))
  return g.node('Log', [g.node('Add', [ins[0], one])])


def _integer_pow(g, eqn, ins):
  y = g.initializer(np.asarray(eqn.params['y'], eqn.invars[0].aval.dtype))
  return g.node('Pow', [ins[0], y])


def _convert(g, eqn, ins):
  return g.node('Cast', ins, to=_dtype(eqn.params['new_dtype']))


def _reshape(g, eqn, ins):
  if eqn.params.get('dimensions') is not None:
    raise Unsupported('reshape with dimensions')
  sizes = [d if _static(d) else -1 for d in eqn.params['new_sizes']]
  if sizes.count(-1) > 1:
    raise Unsupported('reshape with two symbolic sizes')
  return g.node('Reshape', [ins[0], g.ints(sizes)])


def _broadcast_in_dim(g, eqn, ins):
  shape, dims = eqn.params['shape'], eqn.params['broadcast_dimensions']
  x, operand = ins[0], eqn.invars[0].aval.shape
  missing = [d for d in range(len(shape)) if d not in dims]
  if missing:
    x = g.node('Unsqueeze', [x, g.ints(missing)])
  source = [operand[dims.index(i)] if i in dims else 1 for i in range(len(shape))]
  if any(_static(d) and not _same(d, s) for d, s in zip(shape, source)):
    # numpy broadcasting of the later operations does the symbolic (batch) dimension
    x = g.node('Expand', [x, g.ints([d if _static(d) else 1 for d in shape])])
  return x


def _same(a, b) -> bool:
  try:
    return bool(a == b)
  except Exception:  # noqa: BLE001 - symbolic sizes that cannot be compared
    return False


def _squeeze(g, eqn, ins):
  return g.node('Squeeze', [ins[0], g.ints(eqn.params['dimensions'])])


def _transpose(g, eqn, ins):
  return g.node('Transpose', ins, perm=list(eqn.params['permutation']))


def _reduce(op: str):
  def rule(g, eqn, ins):
    return g.node(op, [ins[0], g.ints(eqn.params['axes'])], keepdims=0)
  return rule


def _slice(g, eqn, ins):
  shape = eqn.invars[0].aval.shape
  strides = eqn.params['strides'] or (1,) * len(shape)
  axes, starts, ends, steps = [], [], [], []
  for axis, (lo, hi, step, dim) in enumerate(zip(eqn.params['start_indices'],
                                                 eqn.params['limit_indices'], strides, shape)):
    if _same(lo, 0) and step == 1 and _same(hi, dim):
      continue
    if not (_static(lo) and _static(hi)):
      raise Unsupported('slice along the symbolic batch axis')
    axes.append(axis), starts.append(lo), ends.append(hi), steps.append(step)
  if not axes:
    return g.node('Identity', ins)
  return g.node('Slice', [ins[0], g.ints(starts), g.ints(ends), g.ints(axes), g.ints(steps)])


def _dynamic_slice(g, eqn, ins):
  shape, sizes = eqn.invars[0].aval.shape, eqn.params['slice_sizes']
  starts = []
  for start, dim, size in zip(ins[1:], shape, sizes):    # clamped into range, as XLA does
    if not _static(dim):
      if not _same(dim, size):
        raise Unsupported('dynamic_slice of part of the symbolic batch axis')
      starts.append(g.ints([0]))      # the whole axis: the start clamps to 0
      continue
    s = g.node('Reshape', [g.node('Cast', [start], to=_dtype(np.int64)), g.ints([1])])
    starts.append(g.node('Max', [g.node('Min', [s, g.ints([dim - size])]), g.ints([0])]))
  starts = g.node('Concat', starts, axis=0)
  ends = g.node('Add', [starts, g.ints([s if _static(s) else np.iinfo(np.int64).max
                                        for s in sizes])])
  return g.node('Slice', [ins[0], starts, ends])


def _dim_as_value(g, eqn, ins):
  """The symbolic batch size as a number: the first dimension of the graph's input."""
  if str(eqn.params['dim']) != 'batch':
    raise Unsupported(f'dim_as_value of {eqn.params["dim"]}')
  size = g.node('Gather', [g.node('Shape', [g.input_name]), g.ints([0])], axis=0)
  size = g.node('Squeeze', [size, g.ints([0])])
  return g.node('Cast', [size], to=_dtype(eqn.outvars[0].aval.dtype))


def _pad(g, eqn, ins):
  config = eqn.params['padding_config']
  if any(interior for _, _, interior in config):
    raise Unsupported('pad with interior padding')
  pads = [int(lo) for lo, _, _ in config] + [int(hi) for _, hi, _ in config]
  return g.node('Pad', [ins[0], g.ints(pads), ins[1]], mode='constant')


def _concatenate(g, eqn, ins):
  return g.node('Concat', ins, axis=int(eqn.params['dimension']))


def _stack(g, eqn, ins):
  axis = int(eqn.params['axis'])
  return g.node('Concat', [g.node('Unsqueeze', [x, g.ints([axis])]) for x in ins], axis=axis)


def _select_n(g, eqn, ins):
  if len(ins) != 3 or eqn.invars[0].aval.dtype != np.bool_:
    raise Unsupported('select_n with more than two cases')
  return g.node('Where', [ins[0], ins[2], ins[1]])


def _clamp(g, eqn, ins):
  return g.node('Max', [g.node('Min', [ins[1], ins[2]]), ins[0]])


def _dot_general(g, eqn, ins):
  (lc, rc), (lb, rb) = eqn.params['dimension_numbers']
  lhs, rhs = eqn.invars[0].aval, eqn.invars[1].aval
  if not lb and rhs.ndim == 2 and tuple(lc) == (lhs.ndim - 1,) and tuple(rc) == (0,):
    out = g.node('MatMul', ins)
  else:     # the general case as an einsum
    letters = iter(string.ascii_lowercase)
    left = [next(letters) for _ in range(lhs.ndim)]
    right = [None] * rhs.ndim
    for i, j in zip(list(lc) + list(lb), list(rc) + list(rb)):
      right[j] = left[i]
    right = [r or next(letters) for r in right]
    out_letters = ([left[i] for i in lb] + [c for i, c in enumerate(left) if i not in lc + lb]
                   + [c for j, c in enumerate(right) if j not in rc + rb])
    equation = f'{"".join(left)},{"".join(right)}->{"".join(out_letters)}'
    out = g.node('Einsum', ins, equation=equation)
  dtype = eqn.outvars[0].aval.dtype
  return out if dtype == lhs.dtype else g.node('Cast', [out], to=_dtype(dtype))


def _conv(g, eqn, ins):
  p = eqn.params
  if any(d != 1 for d in p['lhs_dilation']) or p['batch_group_count'] != 1:
    raise Unsupported('conv_general_dilated with input dilation or batch groups')
  lhs_spec, rhs_spec, out_spec = p['dimension_numbers']
  x = g.node('Transpose', [ins[0]], perm=list(lhs_spec))      # to N, C, spatial...
  w = g.node('Transpose', [ins[1]], perm=list(rhs_spec))      # to O, I, spatial...
  pads = [int(lo) for lo, _ in p['padding']] + [int(hi) for _, hi in p['padding']]
  y = g.node('Conv', [x, w], strides=list(p['window_strides']), pads=pads,
             dilations=list(p['rhs_dilation']), group=int(p['feature_group_count']))
  return g.node('Transpose', [y], perm=[int(i) for i in np.argsort(out_spec)])


def _gather(g, eqn, ins):
  """x[..., indices, ...] along one axis (jnp.take and integer indexing), the one gather form
  an ONNX Gather computes."""
  dn, sizes = eqn.params['dimension_numbers'], eqn.params['slice_sizes']
  x, indices = eqn.invars[0].aval, eqn.invars[1].aval
  (axis,) = dn.start_index_map if len(dn.start_index_map) == 1 else (None,)
  nb = indices.ndim - 1
  if (axis is None or tuple(dn.collapsed_slice_dims) != (axis,) or dn.operand_batching_dims
      or not all(_same(s, d) for i, (s, d) in enumerate(zip(sizes, x.shape)) if i != axis)
      or tuple(dn.offset_dims) != tuple(range(axis)) + tuple(range(axis + nb, x.ndim - 1 + nb))):
    raise Unsupported('gather (other than along one axis)')
  index = g.node('Squeeze', [ins[1], g.ints([indices.ndim - 1])])
  return g.node('Gather', [ins[0], index], axis=int(axis))


def _argmax(g, eqn, ins):
  (axis,) = eqn.params['axes']
  out = g.node('ArgMax', ins, axis=int(axis), keepdims=0)
  return g.node('Cast', [out], to=_dtype(eqn.params['index_dtype']))


def _not_equal(g, eqn, ins):
  return g.node('Not', [g.node('Equal', ins)])


_RULES = {
    'add': _elementwise('Add'), 'add_any': _elementwise('Add'), 'sub': _elementwise('Sub'),
    'mul': _elementwise('Mul'), 'div': _elementwise('Div'), 'max': _elementwise('Max'),
    'min': _elementwise('Min'), 'pow': _elementwise('Pow'), 'exp': _elementwise('Exp'),
    'log': _elementwise('Log'), 'tanh': _elementwise('Tanh'), 'sqrt': _elementwise('Sqrt'),
    'neg': _elementwise('Neg'), 'abs': _elementwise('Abs'), 'sign': _elementwise('Sign'),
    'floor': _elementwise('Floor'), 'ceil': _elementwise('Ceil'), 'erf': _elementwise('Erf'),
    'logistic': _elementwise('Sigmoid'), 'lt': _elementwise('Less'),
    'gt': _elementwise('Greater'), 'le': _elementwise('LessOrEqual'),
    'ge': _elementwise('GreaterOrEqual'), 'eq': _elementwise('Equal'), 'ne': _not_equal,
    'and': _elementwise('And'), 'or': _elementwise('Or'), 'not': _elementwise('Not'),
    'stop_gradient': _elementwise('Identity'), 'copy': _elementwise('Identity'),
    'copy_p': _elementwise('Identity'), 'optimization_barrier': _elementwise('Identity'),
    'rsqrt': _rsqrt, 'log1p': _log1p, 'integer_pow': _integer_pow,
    'convert_element_type': _convert, 'reshape': _reshape, 'broadcast_in_dim': _broadcast_in_dim,
    'squeeze': _squeeze, 'transpose': _transpose, 'reduce_sum': _reduce('ReduceSum'),
    'reduce_max': _reduce('ReduceMax'), 'reduce_min': _reduce('ReduceMin'), 'slice': _slice,
    'dynamic_slice': _dynamic_slice, 'pad': _pad, 'concatenate': _concatenate, 'stack': _stack,
    'select_n': _select_n, 'clamp': _clamp, 'dot_general': _dot_general,
    'conv_general_dilated': _conv, 'argmax': _argmax, 'gather': _gather,
    'dim_as_value': _dim_as_value,
}
