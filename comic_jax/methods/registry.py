"""The method registry: one `MethodSpec` per method, filled by the method's own module.

Everything outside `comic_jax/methods/` (the training loop, the benchmark runner, the plots, the
config checks) asks the registry about a method and never compares method names. Adding a method
is one module that calls `register(MethodSpec(...))` (see docs/architecture.md).

A *method object* (what `MethodSpec.create` returns) is built once per run and used inside the
jit-compiled train step; it subclasses `Method` below, which declares every hook with its
default, and every function it exposes is pure.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from comic_jax.errors import require

# Table order of the categories (the paper's table).
CATEGORIES = ('MLC', 'LT-MLC', 'PL-MLC', 'PLT-MLC')


@dataclasses.dataclass(frozen=True)
class StreamSpec:
  """One batch stream of a step: which sampler draws it and how it is augmented.

  `rng_index` is folded into the step's augmentation key (and the cached-feature view draw) so
  every stream gets its own random draws; the main stream uses 0 and COMIC's tail stream 1,
  which keeps the random streams of earlier versions (they sorted the batch keys).
  """
  sampler: str = 'uniform'          # a name of `data.samplers.SAMPLERS`
  rand_augment: bool = False        # RandAugment on top when config.augment.rand_augment_tail
  rng_index: int = 0


MAIN = {'main': StreamSpec()}       # one uniform stream: what most methods read


class Method:
  """The base of every method object: what the training loop, the evaluation, prediction and
  the plots call, with the default of every optional hook. A method subclasses it, sets
  `streams` and `report_names`, implements `init`, `loss` and `predict`, and overrides the
  hooks it uses (tests/test_registry.py checks every registered method is one)."""

  # {stream name: StreamSpec}, the batches one step reads. The step gets `batch[stream] =
  # {'image', 'label' (observed), 'label_full' (diagnostics only), 'label_negative' (1 where the
  # label is known absent; all 0 without known negatives)}`.
  streams: Mapping[str, StreamSpec] = MAIN
  report_names: tuple[str, ...] = ()  # the models it reports; the first is the method's own row
                                      # (its display name where it reports one): the model that
                                      # load / predict / export / the audit use by default

  def init(self, rng, batch) -> tuple[Any, Any, Any]:
    """-> (params, batch_stats, method_state)."""
    raise NotImplementedError

  def loss(self, params, batch_stats, method_state, batch, rng, step) -> tuple[Any, Any]:
    """-> (scalar loss, (new batch_stats, new method_state, {name: scalar metric})); the
    metrics include 'loss', the total."""
    raise NotImplementedError

  def predict(self, params, batch_stats, method_state, images) -> Mapping[str, Any]:
    """-> {report name: logits}."""
    raise NotImplementedError

  # ------------------------------------------------------------------ hooks, with defaults
  def epoch_summary(self, method_state) -> dict:
    """Extra fields of the epoch's metrics.jsonl line, from the host's copy of the method state
    (default: none)."""
    del method_state
    return {}

  def choose_report(self, method_state, val_results, groups) -> tuple[Any, dict] | None:
    """At the end of training, the reported model chosen on the validation metrics
    (`val_results`, None without a validation split; `groups`: each class's group index):
    (the method state that reports it, a record of the choice for metrics.jsonl), or None to
    keep what it reports (default)."""
    del method_state, val_results, groups
    return None

  def is_loss_metric(self, name: str) -> bool:
    """Whether the step metric `name` is a loss (the curves' loss panel; default: every one)."""
    del name
    return True


@dataclasses.dataclass(frozen=True)
class StudyRow:
  """One row of a method's study preset (e.g. the '-RLC' ablation of COMIC)."""
  suffix: str                       # sub-workdir `<method>_<suffix>` ('' = the method as it is)
  label: str                        # row label in the study table
  overrides: tuple = ()             # (('comic.lambda_c', 0.0), ...)


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """What the rest of the package may know about a method."""
  name: str                         # the value of config.method
  display_name: str                 # its row in the tables ('BCE', 'COMIC', ...)
  category: str                     # one of CATEGORIES
  create: Callable[..., Method]     # (config, observed_labels, steps_per_epoch, class_names)
                                    # -> the method object
  end_to_end: bool = True           # the tables' end-to-end column
  classifier: str = 'linear'        # the classifier when config.model.classifier == 'auto'
  table_models: tuple[str, ...] = ()  # reported models in the main table ((display_name,))
  validate: Callable[[Any], None] | None = None   # checks the method's own config section
  # Why the method cannot run with a config at all ('' when it can; BoostLU on pooled frozen
  # features): the benchmark leaves such a method out with this reason instead of failing.
  unsupported: Callable[[Any], str] | None = None
  model_uses_labels: bool = False   # the network is built from the training labels (ML-GCN's
                                    # label graph): prediction must load them
  state_per_image: bool = False     # the method state holds one entry per training image (LL-Cp):
                                    # prediction restores it with the checkpoint's shapes
  studies: Mapping[str, tuple[StudyRow, ...]] = dataclasses.field(default_factory=dict)
  # The config sections the method reads beyond the common ones ('comic', 'baselines.hill'):
  # a run's identity (what a resume compares) counts a method's sections for it alone.
  config_sections: tuple[str, ...] = ()
  # Benchmark runner: a method built on another method's finished run (LWS on BCE) names it
  # here and adapts its config to that run's workdir with `benchmark_config(config, workdir)`.
  builds_on: str = ''
  benchmark_config: Callable[[Any, str], None] | None = None

  @property
  def models(self) -> tuple[str, ...]:
    """The reported models of the main table, in order."""
    return self.table_models or (self.display_name,)

  @property
  def primary_model(self) -> str:
    """The model that studies read and the per-class plot draws: the last of `models`."""
    return self.models[-1]


_REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
  require(spec.category in CATEGORIES,
          f'method {spec.name!r}: category {spec.category!r} is not one of {CATEGORIES}')
  if spec.name in _REGISTRY:
    raise ValueError(f'method {spec.name!r} is registered twice')
  _REGISTRY[spec.name] = spec
  return spec


def unregister(name: str) -> None:
  _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
  """Every registered method, in table order (category, then registration order)."""
  return tuple(s.name for s in sorted(_REGISTRY.values(),
                                      key=lambda s: CATEGORIES.index(s.category)))


def get(name: str) -> MethodSpec:
  require(name in _REGISTRY, f'config.method={name!r} is not one of: {", ".join(names())}')
  return _REGISTRY[name]


def create_method(config, observed_labels, steps_per_epoch: int, class_names=()) -> Method:
  """The method object of `config.method`, knowing the observed training labels."""
  return get(config.method).create(config, observed_labels, steps_per_epoch, tuple(class_names))


def method_sections() -> dict[str, tuple[str, ...]]:
  """{config section: the methods that read it}, from every spec's `config_sections`."""
  out: dict[str, tuple[str, ...]] = {}
  for name in names():
    for section in get(name).config_sections:
      out[section] = out.get(section, ()) + (name,)
  return out


def unsupported_reason(name: str, config) -> str:
  """Why method `name` cannot run with `config` ('' when it can)."""
  spec = get(name)
  return spec.unsupported(config) if spec.unsupported is not None else ''


def classifier_kind(config) -> str:
  """`config.model.classifier`, with 'auto' resolved by the method's spec."""
  kind = config.model.classifier
  return get(config.method).classifier if kind == 'auto' else kind
