"""Methods: what a model is, how it is trained in one step, and which predictions it reports.

A method object is built once per run and is used inside the jit-compiled train step; every
function it exposes is pure:

- `samplers`: batch-key prefix -> sampler name, e.g. {'': 'uniform'}: the step gets `image`,
  `label` (observed) and `label_full` (diagnostics only) drawn by that sampler.
- `init(rng, batch)` -> (params, batch_stats, method_state).
- `loss(params, batch_stats, method_state, batch, rng, step)` ->
  (scalar loss, (new batch_stats, new method_state, dict of scalar metrics)).
- `predict(params, batch_stats, method_state, images)` -> {report name: logits}.

The baselines (BASELINES.md) are one branch (backbone + projection + classifier) with their own
loss, sampler or classifier; COMIC lives in `comic.py`.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from comic_jax import checkpoint, comic
from comic_jax.errors import UserError, require
from comic_jax.losses import baselines
from comic_jax.models import gcn, networks

DISPLAY_NAMES = {
    'comic': 'COMIC', 'bce': 'BCE', 'focal': 'Focal', 'asl': 'ASL', 'db': 'DB',
    'db_focal': 'DB-Focal', 'lws': 'LWS', 'pseudo_label': 'Pseudo-Label', 'ml_gcn': 'ML-GCN',
    'hill': 'Hill', 'pasl': 'P-ASL'}
METHODS = tuple(DISPLAY_NAMES)
BASELINES = tuple(m for m in METHODS if m != 'comic')


def create_loss(config, observed_labels: np.ndarray, steps_per_epoch: int):
  """loss(logits, labels, step) of a single-branch baseline, with its config knobs bound."""
  b, name = config.baselines, config.method
  counts = np.asarray(observed_labels).sum(0).astype(np.float32)
  if name in ('bce', 'ml_gcn', 'lws'):      # ML-GCN: multi-label soft margin = BCE
    return lambda z, y, step: baselines.bce(z, y)
  if name == 'focal':
    return lambda z, y, step: baselines.focal(z, y, gamma=b.focal.gamma, alpha=b.focal.alpha)
  if name == 'asl':
    return lambda z, y, step: baselines.asl(z, y, gamma_pos=b.asl.gamma_pos,
                                            gamma_neg=b.asl.gamma_neg, margin=b.asl.margin)
  if name in ('db', 'db_focal'):
    db = b.db
    return lambda z, y, step: baselines.db(
        z, y, jnp.asarray(counts), len(observed_labels), a=db.a, b=db.b, mu=db.mu,
        kappa=db.kappa, lam=db.lam, focal=name == 'db_focal')
  if name == 'hill':
    return lambda z, y, step: baselines.hill(z, y, margin=b.hill.margin, gamma=b.hill.gamma,
                                             lam=b.hill.lam)
  if name == 'pseudo_label':
    warmup = int(b.pseudo_label.warmup_epochs * steps_per_epoch)
    return lambda z, y, step: baselines.pseudo_label(
        z, y, threshold=b.pseudo_label.threshold, active=step >= warmup)
  if name == 'pasl':
    prior = jnp.asarray(baselines.naive_prior(observed_labels))
    p = b.pasl
    return lambda z, y, step: baselines.pasl(
        z, y, prior, gamma_pos=p.gamma_pos, gamma_unann=p.gamma_unann, margin=p.margin,
        prior_threshold=p.prior_threshold, topk_factor=p.topk_factor)
  raise ValueError(f'{name!r} is not a single-branch baseline')


def _resolve_classifier(config) -> str:
  return 'linear' if config.model.classifier == 'auto' else config.model.classifier


class SingleBranch:
  """One network (backbone + projection + classifier) trained with one multi-label loss."""

  def __init__(self, config, observed_labels: np.ndarray, steps_per_epoch: int, class_names):
    self.name = config.method
    self.report_names = (DISPLAY_NAMES[config.method],)
    sampler = config.baselines.db.sampler if config.method in ('db', 'db_focal') else 'uniform'
    self.samplers = {'': sampler}
    num_classes = observed_labels.shape[1]
    if config.method == 'ml_gcn':
      classifier = self._gcn_classifier(config, observed_labels, class_names)
    else:
      classifier = _resolve_classifier(config)
    self.network = networks.create_network(config.model, num_classes, classifier)
    self.loss_fn = create_loss(config, observed_labels, steps_per_epoch)

  @staticmethod
  def _gcn_classifier(config, observed_labels, class_names) -> gcn.GCNClassifier:
    g = config.baselines.ml_gcn
    if g.word_vectors:
      embeddings = gcn.load_label_embeddings(g.word_vectors, class_names)
    else:
      require(g.fallback in ('one_hot', 'learned'),
              f"config.baselines.ml_gcn.fallback={g.fallback!r} is not one of: one_hot, learned")
      embeddings = np.eye(len(class_names), dtype=np.float32) if g.fallback == 'one_hot' else None
      print(f'ML-GCN: no word vectors given (config.baselines.ml_gcn.word_vectors); using '
            f'{"one-hot" if g.fallback == "one_hot" else "learned"} label embeddings instead of '
            'GloVe')
    return gcn.GCNClassifier(
        adjacency=gcn.gcn_adjacency(observed_labels, threshold=g.threshold, reweight=g.reweight),
        node_features=embeddings, hidden_dim=g.hidden_dim, negative_slope=g.negative_slope)

  def init(self, rng, batch):
    variables = self.network.init({'params': rng}, batch['image'], train=False)
    return variables['params'], variables.get('batch_stats', {}), {}

  def loss(self, params, batch_stats, method_state, batch, rng, step):
    del rng
    out, updates = self.network.apply({'params': params, 'batch_stats': batch_stats},
                                      batch['image'], train=True, mutable=['batch_stats'])
    loss = self.loss_fn(out['logits'], batch['label'], step)
    return loss, (updates['batch_stats'], method_state, {'loss': loss})

  def predict(self, params, batch_stats, method_state, images):
    del method_state
    out = self.network.apply({'params': params, 'batch_stats': batch_stats}, images, train=False)
    return {self.report_names[0]: out['logits']}


class LearnableWeightScaling(SingleBranch):
  """LWS, stage 2 (BASELINES.md): the network of a finished BCE run, frozen, with per-class
  scales s (init 1) learned on z_j = s_j (w_j . f + b_j) with class-aware sampling.

  The frozen BCE variables live in the method state (checkpointed, never differentiated); the
  only parameters are the scales.
  """

  def __init__(self, config, observed_labels, steps_per_epoch, class_names):
    super().__init__(config, observed_labels, steps_per_epoch, class_names)
    self.samplers = {'': config.baselines.lws.sampler}
    stage1 = config.baselines.lws.stage1_workdir
    require(bool(stage1), 'LWS needs a finished BCE run: set config.baselines.lws.stage1_workdir '
            '(the benchmark runner does this for you)')
    try:
      self.stage1 = checkpoint.load_variables(stage1)
    except FileNotFoundError as e:
      raise UserError(f'LWS stage 1: {e}') from None

  def init(self, rng, batch):
    params, batch_stats, _ = super().init(rng, batch)
    frozen = jax.tree.map(jnp.asarray, self.stage1)
    expected = jax.tree.map(jnp.shape, {'params': params, 'batch_stats': batch_stats})
    if jax.tree.map(jnp.shape, frozen) != expected:
      raise UserError('LWS stage 1 run has another network than this config builds; use the '
                      'same model config for both stages')
    scales = jnp.ones((self.network.classifier.num_classes,), jnp.float32)
    return {'scales': scales}, {}, {'frozen': frozen}

  def _logits(self, params, method_state, images):
    frozen = jax.lax.stop_gradient(method_state['frozen'])
    out = self.network.apply(frozen, images, train=False)
    return params['scales'] * out['logits']

  def loss(self, params, batch_stats, method_state, batch, rng, step):
    loss = self.loss_fn(self._logits(params, method_state, batch['image']), batch['label'], step)
    return loss, (batch_stats, method_state, {'loss': loss})

  def predict(self, params, batch_stats, method_state, images):
    return {self.report_names[0]: self._logits(params, method_state, images)}


def create_method(config, observed_labels: np.ndarray, steps_per_epoch: int, class_names=()):
  """The method named by `config.method`, knowing the observed training labels."""
  if config.method == 'comic':
    return comic.Comic(config, observed_labels, steps_per_epoch)
  if config.method == 'lws':
    return LearnableWeightScaling(config, observed_labels, steps_per_epoch, class_names)
  if config.method in BASELINES:
    return SingleBranch(config, observed_labels, steps_per_epoch, class_names)
  raise ValueError(f'unknown method {config.method!r}; choose one of {METHODS}')


def sigmoid_predictions(logits: dict) -> dict:
  return {k: jax.nn.sigmoid(v) for k, v in logits.items()}
