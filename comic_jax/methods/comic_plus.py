"""COMIC+: the paper's COMIC with the changes that the measurements on PLT-Synth justify
(docs/method.md "COMIC+"). Every change is a field of `config.comic_plus` and can be switched
off; with all of them off COMIC+ trains and reports exactly what COMIC does.

- `comic_plus.htb_loss`: the reading of L_htb ('product': the paper's equation, which trains the
  balanced model as a product of experts with its teachers; 'distill': the teachers' class
  distributions (softmax) as soft targets; 'distill_sigmoid', COMIC+'s: each class's teacher
  probability (sigmoid) as a soft target), with `comic_plus.temperature`, and its weight
  `comic_plus.lambda_b` (COMIC+'s 0.5; the paper's 1 switches it off).
- `comic_plus.kappa`: which teacher kappa trusts ('worse': the paper's kappa, the branch that
  fits the batch worse; 'better': the branch that fits it better).
- `comic_plus.report`: what is reported as "COMIC+" ('balanced': z_b, as COMIC does; 'fusion': the
  average of the members' logits or probabilities, `fuse_logits`; 'auto', COMIC+'s default:
  the one of the balanced, Head and Tail Models and two fusions with the best validation total mAP
  when training ends, `choose_report`; the test set is never looked at). The fusion is what the
  product reading needs (its z_b is trained as a product of experts with the teachers); with the
  distillation reading and COMIC's teachers z_b alone was better on validation; with the stronger
  teachers below, the mean probability of z_b and the Head Model was best (3 seeds), so COMIC+
  reports it ('fusion', `comic_plus.fusion='prob'`, `members=('balanced', 'head')`).
  `comic_plus.report_per_group` (with 'auto'; PLT-Synth's recipes): each class group (many /
  medium / few) reports the candidate best on its own validation mAP, `choose_per_group`.

- The teachers (the head and tail branches): `comic_plus.teacher_loss` (their own loss and
  kappa's measure of their fit: COMIC+'s 'hill', Hill's loss; COMIC's 'mfm'),
  `comic_plus.teacher_classifier` (COMIC+'s 'linear'; '' keeps the method's cosine classifier)
  and `comic_plus.teacher_energy` (False: the teachers' logits are used as they are, without
  the energy term: `comic.htb.a_head = a_tail = 0`; True: COMIC's energy-adjusted zhat).
  Measured together on validation (3 seeds) and each switched off (docs/method.md "COMIC+").
- `comic_plus.branch_loss`: the balanced branch's own loss ('mfm', COMIC's; 'hill'; 'bce'),
  measured against MFM on validation and not taken: 'mfm' is the default.
- `comic_plus.ema`: a decay d in (0, 1) evaluates, reports and saves for prediction an
  exponential moving average of the parameters and batch statistics (`ema_update`, debiased by
  `ema_value`) instead of the last step's; 0 (the default) switches it off. It rides in the
  method state, updated by the same train step (one step behind: step t averages the parameters
  that step t computed its gradient at).

The balanced, head and tail models are reported too ("Balanced Model", "Head Model",
"Tail Model"), so one run measures every reporting choice on the validation set.
"""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np

from comic_jax.data import longtail
from comic_jax.errors import require
from comic_jax.losses import baselines as baseline_losses
from comic_jax.losses import htb, mfm
from comic_jax.methods import comic, registry
from comic_jax.methods.registry import MethodSpec, StudyRow

# config.comic_plus, the method's own section with its defaults: plain data, which
# configs/default.py reads without importing this module (its `method_defaults`). COMIC+
# reads config.comic too (every field applies) with these changes, each chosen on the validation
# set (docs/method.md "COMIC+"); htb_loss='product', lambda_b=1, kappa='worse',
# teacher_loss='mfm', teacher_classifier='' and teacher_energy=True (with report='balanced',
# branch_loss='mfm') train and report exactly what COMIC does.
CONFIG_SECTIONS = {'comic_plus': {
    'htb_loss': 'distill_sigmoid',      # L_htb reading: 'product' (paper) | 'distill' |
                                        # 'distill_sigmoid' (as config.comic.htb.loss)
    'temperature': 1.0,                 # 'distill*': temperature T (loss times T^2)
    'lambda_b': 0.5,                    # weight of L_htb; replaces comic.lambda_b for COMIC+
                                        # (the paper's 1.0 switches this change off)
    'kappa': 'better',                  # kappa trusts the teacher that fits the batch 'worse'
                                        # (paper) | 'better'
    'report': 'auto',                   # "COMIC+" is 'balanced' (z_b) | 'fusion' of the members
                                        # | 'auto' (the best on validation at the end; without a
                                        # validation split, the fusion of z_b and the head)
    'report_per_group': False,          # report='auto': True, one candidate per class group
                                        # (many / medium / few, by its validation mAP; PLT-Synth's
                                        # recipes); False: one for all (a carve is too small)
    'fusion': 'prob',                   # 'prob': mean of the sigmoids | 'logit': mean of logits
    'members': ('balanced', 'head'),    # models fused ('balanced', 'head', 'tail')
    'teacher_loss': 'hill',             # the head and tail branches' own loss (and kappa's):
                                        # 'mfm' (COMIC's) | 'hill' (config.baselines.hill) | 'bce'
    'teacher_classifier': 'linear',     # their classifier: 'linear' | '' (the method's: cosine)
    'teacher_energy': False,            # True: their logits energy-adjusted (COMIC's zhat);
                                        # False: as they are (comic.htb.a_head = a_tail = 0)
    'branch_loss': 'mfm',               # the balanced branch's own loss: 'mfm' (COMIC's) | 'hill'
                                        # | 'bce'; RLC keeps MFM
    'ema': 0.0,                         # > 0: evaluate / report an exponential moving average of
                                        # the parameters with this decay (0: the last step's)
}}

MODELS = {'balanced': 'Balanced Model', 'head': 'Head Model', 'tail': 'Tail Model'}
FUSIONS = ('prob', 'logit')
BRANCH_LOSSES = ('mfm', 'hill', 'bce')
REPORTS = ('balanced', 'fusion', 'auto')
# report='auto': the candidates for "COMIC+", chosen by validation total mAP when training ends.
AUTO_FUSIONS = {'Fusion (balanced, head)': ('balanced', 'head'),
                'Fusion (balanced, head, tail)': ('balanced', 'head', 'tail')}
AUTO_CANDIDATES = (*MODELS.values(), *AUTO_FUSIONS)
AUTO_BEFORE_CHOICE = 'Fusion (balanced, head)'   # COMIC+'s fixed report, until the choice
KAPPAS = ('worse', 'better')
TEACHER_CLASSIFIERS = ('', 'linear', 'cosine')


def fuse_logits(logits: list[jnp.ndarray], kind: str = 'prob') -> jnp.ndarray:
  """One model's logits from several: 'prob' = logit of the mean of the sigmoids (clipped to
  [1e-7, 1 - 1e-7]), 'logit' = the mean of the logits.

  A class's ranking of the images is all its AP sees; averaging probabilities lets each model
  move an image only as far as it is unsure, averaging logits lets a confident model dominate.
  """
  z = jnp.stack([x.astype(jnp.float32) for x in logits])
  if kind == 'logit':
    return z.mean(0)
  p = jnp.clip(jax.nn.sigmoid(z).mean(0), 1e-7, 1.0 - 1e-7)
  return jnp.log(p) - jnp.log1p(-p)


def _score(value) -> float:
  """A validation mAP as a float (a JSON file's null, a group without positives: NaN)."""
  return float('nan') if value is None else float(value)


def choose_per_group(val_results: dict, groups, candidates=AUTO_CANDIDATES
                     ) -> tuple[np.ndarray, dict]:
  """(per class, the index in `candidates` of the best validation mAP of its class group (the
  first on ties); {group name: that candidate}). `groups`: (C,) indices of longtail.GROUP_NAMES.
  A group without a validation score (none of its classes has a validation positive: NaN)
  takes the candidate of the best total.

  A class's AP sees only its own column, so the composite's mAP in each group is the chosen
  candidate's: the choice maximises every group's validation mAP, hence the total's.
  """
  def best(key):
    scores = [_score(val_results[name][key]) for name in candidates]
    return int(np.nanargmax(scores)) if not np.all(np.isnan(scores)) else None
  fallback = best('total')
  picks = [fallback if (b := best(name)) is None else b for name in longtail.GROUP_NAMES]
  index = np.asarray(picks, np.int64)[np.asarray(groups)]
  return index, {name: candidates[i] for name, i in zip(longtail.GROUP_NAMES, picks)}


def trust_better_weights(loss_head, loss_tail, alpha: float = 2.0, *, detach: bool = True):
  """kappa_h = L_t^alpha / (L_h^alpha + L_t^alpha), kappa_t = 1 - kappa_h (no gradient).

  The paper's kappa with the roles swapped: the teacher that fits the batch better gets the
  larger weight. With the paper's kappa the tail model, whose loss on uniform batches is ~10x
  the head model's, teaches almost alone (kappa_h falls to 0.01).
  """
  kappa_t, kappa_h = htb.htb_weights(loss_head, loss_tail, alpha, detach=detach)
  return kappa_h, kappa_t


def ema_update(average, value, decay: float):
  """One step of the (biased) moving average: d * average + (1 - d) * value, leaf by leaf, in
  float32, without a gradient. Starts from zeros (`ema_init`); `ema_value` removes the bias."""
  return jax.tree_util.tree_map(
      lambda a, v: decay * a + (1.0 - decay) * jax.lax.stop_gradient(v).astype(jnp.float32),
      average, value)


def ema_init(tree) -> dict:
  """The moving average's state of `tree` (parameters and batch statistics): zeros and a count."""
  return {'average': jax.tree_util.tree_map(lambda v: jnp.zeros(v.shape, jnp.float32), tree),
          'count': jnp.zeros((), jnp.int32)}


def ema_value(state: dict, decay: float, like):
  """The debiased average average / (1 - d^count) (Adam's bias correction), cast to the dtypes
  of `like`; with count 0 (no step yet), `like` itself."""
  count = state['count']
  correction = 1.0 - jnp.power(jnp.float32(decay), count.astype(jnp.float32))
  safe = jnp.where(count > 0, correction, 1.0)
  return jax.tree_util.tree_map(
      lambda a, v: jnp.where(count > 0, a / safe, v.astype(jnp.float32)).astype(v.dtype),
      state['average'], like)


def comic_config(config):
  """`config` with config.comic carrying COMIC+'s HTB reading and weight (the section COMIC
  reads): for COMIC+, `comic_plus.lambda_b` replaces `comic.lambda_b`."""
  cp = config.comic_plus
  out = config.copy_and_resolve_references()
  out.unlock()
  out.comic.htb.loss = cp.htb_loss
  out.comic.htb.temperature = cp.temperature
  out.comic.lambda_b = cp.lambda_b
  if not cp.teacher_energy:
    out.comic.htb.a_head = out.comic.htb.a_tail = 0.0
  out.lock()
  return out


class ComicPlus(comic.Comic):
  """COMIC with `config.comic_plus`'s changes (module docstring)."""

  def __init__(self, config, observed_labels, steps_per_epoch: int, class_names=()):
    self.cp = config.comic_plus
    self.teacher_classifier = self.cp.teacher_classifier
    self.teacher_loss_name, self.branch_loss_name = self.cp.teacher_loss, self.cp.branch_loss
    super().__init__(comic_config(config), observed_labels, steps_per_epoch, class_names)
    self.auto = self.use_htb and self.cp.report == 'auto'
    self.per_group = self.auto and self.cp.report_per_group
    # "COMIC+" first, whatever the report: the row the tables call the method is what load,
    # predict, export and the audit answer with by default (registry.Method.report_names).
    if self.auto:
      self.report_names = ('COMIC+', *AUTO_CANDIDATES)
    elif self.use_htb:
      self.report_names = ('COMIC+', 'Balanced Model', 'Head Model', 'Tail Model')
    else:
      self.report_names = ('COMIC+',)

  def init(self, rng, batch):
    params, batch_stats, method_state = super().init(rng, batch)
    if self.auto:   # the index of the candidate reported as COMIC+ (per class), in the checkpoint
      first = AUTO_CANDIDATES.index(AUTO_BEFORE_CHOICE)
      method_state['report'] = (jnp.full((self.num_classes,), first, jnp.int32)
                                if self.per_group else jnp.asarray(first, jnp.int32))
    if self.cp.ema:
      method_state['ema'] = ema_init({'params': params, 'batch_stats': batch_stats})
    return params, batch_stats, method_state

  def loss(self, params, batch_stats, method_state, batch, rng, step):
    total, (batch_stats, new_state, metrics) = super().loss(
        params, batch_stats, method_state, batch, rng, step)
    if self.auto:
      new_state['report'] = method_state['report']
    if self.cp.ema:   # this step's parameters, and the batch statistics its forward pass updated
      ema = method_state['ema']
      new_state['ema'] = {
          'average': ema_update(ema['average'], {'params': params, 'batch_stats': batch_stats},
                                self.cp.ema),
          'count': ema['count'] + 1}
    return total, (batch_stats, new_state, metrics)

  def choose_report(self, method_state, val_results: dict, groups=None):
    """report='auto': (method_state reporting the candidate of the best validation total mAP
    as COMIC+ (the first on ties), the record of the choice), or None for another report.
    With `comic_plus.report_per_group`, each class group's classes (`groups`: (C,) indices of
    longtail.GROUP_NAMES) report the candidate of that group's best validation mAP
    (`choose_per_group`)."""
    if val_results is None and self.config.refit_choice:   # refit: the carve run's choice
      with open(self.config.refit_choice) as f:
        val_results = json.load(f)
    if not self.auto or val_results is None:
      return None
    scores = {name: _score(val_results[name]['total']) for name in AUTO_CANDIDATES}
    if self.per_group:
      index, picks = choose_per_group(val_results, groups)
      record = {'COMIC+': 'per class group', 'by': 'validation mAP of each class group',
                'groups': picks, 'candidates': scores}
      return {**method_state, 'report': jnp.asarray(index, jnp.int32)}, record
    chosen = max(AUTO_CANDIDATES, key=lambda name: scores[name])   # max keeps the first tie
    record = {'COMIC+': chosen, 'by': 'validation total mAP', 'candidates': scores}
    return {**method_state, 'report': jnp.asarray(AUTO_CANDIDATES.index(chosen), jnp.int32)}, \
        record

  def own_loss(self, kind: str, logits, labels):
    """A branch's own loss: COMIC's MFM ('mfm'), Hill's ('hill') or plain BCE ('bce')."""
    if kind == 'hill':
      h = self.config.baselines.hill
      return baseline_losses.hill(logits, labels, margin=h.margin, gamma=h.gamma, lam=h.lam)
    if kind == 'bce':
      return mfm.mfm_loss_from_counts(logits, labels, self.counts, mfm.MFMSettings.bce())
    return self.mfm_loss(logits, labels)

  def branch_loss(self, logits, labels):
    """The balanced branch's own loss (`comic_plus.branch_loss`). RLC keeps MFM on its corrected
    targets."""
    return self.own_loss(self.cp.branch_loss, logits, labels)

  def teacher_loss(self, logits, labels):
    """The head and tail branches' own loss and kappa's measure of their fit
    (`comic_plus.teacher_loss`)."""
    return self.own_loss(self.cp.teacher_loss, logits, labels)

  def htb_weights(self, loss_head, loss_tail):
    if self.cp.kappa == 'better':
      return trust_better_weights(loss_head, loss_tail, self.cc.htb.alpha,
                                  detach=self.cc.htb.loss != 'official')
    return super().htb_weights(loss_head, loss_tail)

  def predict(self, params, batch_stats, method_state, images):
    if self.cp.ema:
      averaged = ema_value(method_state['ema'], self.cp.ema,
                           {'params': params, 'batch_stats': batch_stats})
      params, batch_stats = averaged['params'], averaged['batch_stats']
    preds = super().predict(params, batch_stats, method_state, images)
    balanced = preds.pop('COMIC')
    if not self.use_htb:
      return {'COMIC+': balanced}
    preds = {'Balanced Model': balanced, **preds}
    if self.auto:
      for name, members in AUTO_FUSIONS.items():
        preds[name] = fuse_logits([preds[MODELS[m]] for m in members], self.cp.fusion)
      stacked = jnp.stack([preds[name] for name in AUTO_CANDIDATES])     # (K, N, C)
      report = method_state['report']
      chosen = (stacked[report] if report.ndim == 0 else     # one candidate, or one per class
                jnp.take_along_axis(stacked, report[None, None, :], axis=0)[0])
      return {'COMIC+': chosen, **preds}
    if self.cp.report == 'fusion':
      reported = fuse_logits([preds[MODELS[m]] for m in self.cp.members], self.cp.fusion)
    else:
      reported = balanced
    return {'COMIC+': reported, **preds}


def validate(config) -> None:
  """Checks config.comic (COMIC's own rules) and config.comic_plus."""
  comic.validate(comic_config(config))
  cp = config.comic_plus
  # comic_plus.lambda_b replaces comic.lambda_b: a value given to the latter would be ignored.
  require(config.comic.lambda_b in (1.0, cp.lambda_b),
          f'config.comic.lambda_b={config.comic.lambda_b!r} is COMIC\'s weight of L_htb; '
          'COMIC+ reads config.comic_plus.lambda_b')
  require(cp.report in REPORTS,
          f'config.comic_plus.report={cp.report!r} is not one of: {", ".join(REPORTS)}')
  require(cp.fusion in FUSIONS,
          f'config.comic_plus.fusion={cp.fusion!r} is not one of: {", ".join(FUSIONS)}')
  require(cp.kappa in KAPPAS,
          f'config.comic_plus.kappa={cp.kappa!r} is not one of: {", ".join(KAPPAS)}')
  for field in ('branch_loss', 'teacher_loss'):
    require(cp[field] in BRANCH_LOSSES,
            f'config.comic_plus.{field}={cp[field]!r} is not one of: {", ".join(BRANCH_LOSSES)}')
  require(cp.teacher_classifier in TEACHER_CLASSIFIERS,
          f'config.comic_plus.teacher_classifier={cp.teacher_classifier!r} is not one of: '
          "'' (the method's), linear, cosine")
  # Without the teachers' energy term, COMIC's weights of it would be ignored.
  htb_config = config.comic.htb
  require(cp.teacher_energy or (htb_config.a_head, htb_config.a_tail) == (1.0, 1.0),
          f'config.comic.htb.a_head={htb_config.a_head!r} / a_tail={htb_config.a_tail!r} weigh '
          'the teachers\' energy term, which config.comic_plus.teacher_energy=False leaves out')
  require(0.0 <= cp.ema < 1.0,
          f'config.comic_plus.ema={cp.ema!r}: the moving average\'s decay is in [0, 1) (0: off)')
  members = tuple(cp.members)
  require(len(members) > 0 and all(m in MODELS for m in members),
          f'config.comic_plus.members={members!r}: choose from {", ".join(MODELS)}')


# `--preset=modules` for COMIC+: every change switched off in turn, and the paper's modules.
STUDIES = {
    # The HTB reading, its weight and what is reported, each every way: the row equal to the
    # recipe's own value is left out by the benchmark (configs/synthetic_pretrained.py sets
    # 'product', lambda_b 1 and COMIC's teachers).
    'modules': (StudyRow('', 'COMIC+'),
                StudyRow('product', 'product L_htb (the paper)',
                         (('comic_plus.htb_loss', 'product'),)),
                StudyRow('distill', 'distillation L_htb', (('comic_plus.htb_loss', 'distill'),)),
                StudyRow('distill_sigmoid', 'per-class distillation L_htb',
                         (('comic_plus.htb_loss', 'distill_sigmoid'),)),
                StudyRow('lambda_b_1', "L_htb weight 1 (the paper's)",
                         (('comic_plus.lambda_b', 1.0),)),
                StudyRow('kappa_worse', "-kappa (paper's kappa)", (('comic_plus.kappa', 'worse'),)),
                StudyRow('teacher_mfm', "MFM teachers (the paper's)",
                         (('comic_plus.teacher_loss', 'mfm'),)),
                StudyRow('teacher_cosine', "cosine teachers (the paper's)",
                         (('comic_plus.teacher_classifier', ''),)),
                StudyRow('teacher_energy', "teachers' energy term (the paper's)",
                         (('comic_plus.teacher_energy', True),)),
                StudyRow('fusion', 'report the fusion', (('comic_plus.report', 'fusion'),)),
                StudyRow('auto', 'report chosen on validation, one for all classes',
                         (('comic_plus.report', 'auto'), ('comic_plus.report_per_group', False))),
                StudyRow('per_group', 'report chosen on validation per class group',
                         (('comic_plus.report', 'auto'), ('comic_plus.report_per_group', True))),
                StudyRow('balanced', 'report z_b', (('comic_plus.report', 'balanced'),)),
                StudyRow('no_rlc', '-RLC', (('comic.lambda_c', 0.0),)),
                StudyRow('no_mfm', '-MFM', (('comic.mfm.enabled', False),))),
}

registry.register(MethodSpec(
    'comic_plus', 'COMIC+', 'PLT-MLC', ComicPlus, classifier='cosine',
    table_models=('COMIC+',), validate=validate, studies=STUDIES,
    config_sections=('comic', 'comic_plus', 'baselines.hill')))
