"""The single-branch baselines (docs/baselines.md): one network (backbone + projection +
classifier) trained with its own multi-label loss, and sometimes its own sampler or classifier.

Each baseline registers a `MethodSpec` whose `create` builds a `SingleBranch` around its loss
factory; LWS (two stages) lives in `lws.py`, COMIC in `comic.py`.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from comic_jax.data import samplers
from comic_jax.errors import require
from comic_jax.losses import baselines as losses
from comic_jax.methods import registry
from comic_jax.methods.registry import MethodSpec, StreamSpec
from comic_jax.models import gcn, networks

# config.baselines.<name>: the sections of the baselines of this module, with their defaults
# (docs/baselines.md; each original's training defaults, DB: its COCO values): plain data, which
# configs/default.py reads without importing this module (its `method_defaults`).
CONFIG_SECTIONS = {
    'baselines.focal': {'gamma': 2.0, 'alpha': 0.25},
    'baselines.asl': {'gamma_pos': 0.0, 'gamma_neg': 4.0, 'margin': 0.05},
    'baselines.db': {
        'a': 0.1,                       # re-balanced weight: a + sigmoid(b (r - mu))
        'b': 10.0,
        'mu': 0.2,                      # VOC: 0.3
        'kappa': 0.05,                  # negative-tolerant regularisation: nu = -(kappa/lam) ...
        'lam': 2.0,                     # lambda; VOC: 5
        'sampler': 'class_aware',       # DB's official sampler ('uniform' to switch it off)
    },
    'baselines.hill': {'margin': 1.0, 'gamma': 2.0, 'lam': 1.5},
    'baselines.pseudo_label': {
        'threshold': 0.6,               # an unobserved entry with p > threshold is a positive
        'warmup_epochs': 1,             # no pseudo-labels before this many epochs
    },
    'baselines.pasl': {
        'gamma_pos': 0.0, 'gamma_unann': 4.0, 'margin': 0.0,
        'gamma_neg': 1.0,               # g- of annotated (known) negatives (labels of -1 data)
        'prior_threshold': 0.5,         # ignore unannotated entries of classes with prior above
        'topk_factor': 5,               # ignore the topk_factor x batch most likely unannotated
    },
    'baselines.ml_gcn': {
        'word_vectors': '',             # GloVe text file or a (C, k) .npy; '' -> fallback
        'fallback': 'one_hot',          # without word vectors: 'one_hot' | 'learned' embeddings
        'threshold': 0.4,               # tau of the label graph: A = 1[P(j|i) >= tau]
        'reweight': 0.25,               # p of the re-weighted adjacency
        'hidden_dim': 1024,
        'negative_slope': 0.2,          # LeakyReLU between the two GCN layers
    },
}


class SingleBranch(registry.Method):
  """One network trained with one multi-label loss `loss_fn(logits, labels, step)`.

  With `reads_negatives`, the loss also gets the batch's known-negative mask,
  `loss_fn(logits, labels, step, negatives=batch['label_negative'])` (None when the batch has no
  such key); the other losses treat known negatives like every other 0 label.
  """

  def __init__(self, config, observed_labels: np.ndarray, loss_fn, *, classifier=None,
               sampler: str = 'uniform', reads_negatives: bool = False):
    spec = registry.get(config.method)
    self.report_names = (spec.display_name,)
    self.streams = {'main': StreamSpec(sampler)}
    num_classes = observed_labels.shape[1]
    self.network = networks.create_network(
        config.model, num_classes, classifier or registry.classifier_kind(config))
    self.loss_fn = loss_fn
    self.reads_negatives = reads_negatives

  def init(self, rng, batch):
    variables = self.network.init({'params': rng}, batch['main']['image'], train=False)
    return variables['params'], variables.get('batch_stats', {}), {}

  def loss(self, params, batch_stats, method_state, batch, rng, step):
    del rng
    b = batch['main']
    out, updates = self.network.apply({'params': params, 'batch_stats': batch_stats},
                                      b['image'], train=True, mutable=['batch_stats'])
    extra = {'negatives': b.get('label_negative')} if self.reads_negatives else {}
    loss = self.loss_fn(out['logits'], b['label'], step, **extra)
    return loss, (updates['batch_stats'], method_state, {'loss': loss})

  def predict(self, params, batch_stats, method_state, images):
    del method_state
    out = self.network.apply({'params': params, 'batch_stats': batch_stats}, images, train=False)
    return {self.report_names[0]: out['logits']}


def _counts(observed_labels) -> np.ndarray:
  return np.asarray(observed_labels).sum(0).astype(np.float32)


def _single_branch(loss_factory, sampler=lambda config: 'uniform', *,
                   reads_negatives: bool = False):
  """`MethodSpec.create` of a baseline: `loss_factory(config, observed_labels, steps_per_epoch)`
  gives loss(logits, labels, step), or with `reads_negatives` loss(logits, labels, step,
  negatives) (see `SingleBranch`)."""
  def create(config, observed_labels, steps_per_epoch, class_names):
    del class_names
    return SingleBranch(config, observed_labels,
                        loss_factory(config, observed_labels, steps_per_epoch),
                        sampler=sampler(config), reads_negatives=reads_negatives)
  return create


def _choice(name, value, options):
  require(value in options, f'config.{name}={value!r} is not one of: {", ".join(options)}')


# ------------------------------------------------------------------------------- the losses

def _bce(config, observed_labels, steps_per_epoch):
  return lambda z, y, step: losses.bce(z, y)


def _focal(config, observed_labels, steps_per_epoch):
  f = config.baselines.focal
  return lambda z, y, step: losses.focal(z, y, gamma=f.gamma, alpha=f.alpha)


def _asl(config, observed_labels, steps_per_epoch):
  a = config.baselines.asl
  return lambda z, y, step: losses.asl(z, y, gamma_pos=a.gamma_pos, gamma_neg=a.gamma_neg,
                                       margin=a.margin)


def _db(focal: bool):
  def factory(config, observed_labels, steps_per_epoch):
    db, counts = config.baselines.db, jnp.asarray(_counts(observed_labels))
    return lambda z, y, step: losses.db(z, y, counts, len(observed_labels), a=db.a, b=db.b,
                                        mu=db.mu, kappa=db.kappa, lam=db.lam, focal=focal)
  return factory


def _validate_db(config):
  _choice('baselines.db.sampler', config.baselines.db.sampler, samplers.SAMPLERS)


def _hill(config, observed_labels, steps_per_epoch):
  h = config.baselines.hill
  return lambda z, y, step: losses.hill(z, y, margin=h.margin, gamma=h.gamma, lam=h.lam)


def _pseudo_label(config, observed_labels, steps_per_epoch):
  p = config.baselines.pseudo_label
  warmup = int(p.warmup_epochs * steps_per_epoch)
  return lambda z, y, step: losses.pseudo_label(z, y, threshold=p.threshold,
                                                active=step >= warmup)


def _validate_pseudo_label(config):
  t = config.baselines.pseudo_label.threshold
  require(0.0 <= t <= 1.0, f'config.baselines.pseudo_label.threshold={t!r} must be in [0, 1]')


def _pasl(config, observed_labels, steps_per_epoch):
  prior = jnp.asarray(losses.naive_prior(observed_labels))
  p = config.baselines.pasl
  gamma_neg = p.gamma_neg              # the annotated-negative term's g- (known negatives)
  return lambda z, y, step, negatives=None: losses.pasl(
      z, y, prior, gamma_pos=p.gamma_pos, gamma_unann=p.gamma_unann, gamma_neg=gamma_neg,
      margin=p.margin, prior_threshold=p.prior_threshold, topk_factor=p.topk_factor,
      negatives=negatives)


def _validate_pasl(config):
  k = config.baselines.pasl.topk_factor
  require(k >= 0, f'config.baselines.pasl.topk_factor={k!r} must be >= 0')
  g = config.baselines.pasl.gamma_neg
  require(g >= 0, f'config.baselines.pasl.gamma_neg={g!r} must be >= 0')


# ------------------------------------------------------------------------------- ML-GCN

def _create_ml_gcn(config, observed_labels, steps_per_epoch, class_names):
  g = config.baselines.ml_gcn
  if g.word_vectors:
    embeddings = gcn.load_label_embeddings(g.word_vectors, class_names)
  else:
    embeddings = np.eye(len(class_names), dtype=np.float32) if g.fallback == 'one_hot' else None
    print(f'ML-GCN: no word vectors given (config.baselines.ml_gcn.word_vectors); using '
          f'{"one-hot" if g.fallback == "one_hot" else "learned"} label embeddings instead of '
          'GloVe')
  classifier = gcn.GCNClassifier(
      adjacency=gcn.gcn_adjacency(observed_labels, threshold=g.threshold, reweight=g.reweight),
      node_features=embeddings, hidden_dim=g.hidden_dim, negative_slope=g.negative_slope)
  # ML-GCN's multi-label soft margin loss is BCE.
  return SingleBranch(config, observed_labels, _bce(config, observed_labels, steps_per_epoch),
                      classifier=classifier)


def _validate_ml_gcn(config):
  g = config.baselines.ml_gcn
  _choice('baselines.ml_gcn.fallback', g.fallback, ('one_hot', 'learned'))
  require(g.hidden_dim > 0, f'config.baselines.ml_gcn.hidden_dim={g.hidden_dim!r} must be > 0')


# ------------------------------------------------------------------------------- registration

registry.register(MethodSpec('bce', 'BCE', 'MLC', _single_branch(_bce)))
registry.register(MethodSpec('focal', 'Focal', 'MLC', _single_branch(_focal),
                             config_sections=('baselines.focal',)))
registry.register(MethodSpec('asl', 'ASL', 'MLC', _single_branch(_asl),
                             config_sections=('baselines.asl',)))
registry.register(MethodSpec(
    'db', 'DB', 'LT-MLC', _single_branch(_db(False), lambda c: c.baselines.db.sampler),
    validate=_validate_db, config_sections=('baselines.db',)))
registry.register(MethodSpec(
    'db_focal', 'DB-Focal', 'LT-MLC', _single_branch(_db(True), lambda c: c.baselines.db.sampler),
    validate=_validate_db, config_sections=('baselines.db',)))
registry.register(MethodSpec(
    'pseudo_label', 'Pseudo-Label', 'PL-MLC', _single_branch(_pseudo_label), end_to_end=False,
    validate=_validate_pseudo_label, config_sections=('baselines.pseudo_label',)))
registry.register(MethodSpec('ml_gcn', 'ML-GCN', 'PL-MLC', _create_ml_gcn,
                             validate=_validate_ml_gcn, model_uses_labels=True,
                             config_sections=('baselines.ml_gcn',)))
registry.register(MethodSpec('hill', 'Hill', 'PL-MLC', _single_branch(_hill),
                             config_sections=('baselines.hill',)))
registry.register(MethodSpec('pasl', 'P-ASL', 'PL-MLC',
                             _single_branch(_pasl, reads_negatives=True), validate=_validate_pasl,
                             config_sections=('baselines.pasl',)))
