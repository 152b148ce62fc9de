"""COMIC as a method of the harness: one train step over three branches (docs/method.md).

Per step (U: a batch drawn uniformly over images, R: a class-reversed batch):

    head:     L_mfm(z_h; U)            + lambda_c * L_rlc(z_h; U)
    tail:     L_mfm(z_t; R)            + lambda_c * L_rlc(z_t; R)
    balanced: lambda_m * L_mfm(z_b; U) + lambda_c * L_rlc(z_b; U) + lambda_b * L_htb

The stop-gradients inside the losses keep each branch trained by its own terms, so one
`jax.grad` of the sum updates all three. Method state (checkpointed with the train state):
the energies e_t of the head and tail branches as `optax.trace` states (the balanced branch's
energy enters no equation, so none is kept) and one RLC state per branch (running class means,
correction counters; see `losses/rlc.py`).

Reported at test time: "COMIC" (the balanced model z_b), "Head Model" (zhat_h) and "Tail Model"
(zhat_t).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from comic_jax.errors import require
from comic_jax.losses import htb, mfm, rlc
from comic_jax.methods import registry
from comic_jax.methods.registry import MethodSpec, StreamSpec, StudyRow
from comic_jax.models import comic_branches, heads, networks

# config.comic, the method's own section with its defaults (docs/method.md, equation by
# equation): plain data, which configs/default.py reads without importing this module
# (its `method_defaults`). Ablations: -RLC: comic.lambda_c=0; -MFM: comic.mfm.enabled=False;
# -HTB: comic.htb.enabled=False; MFM "P-N only": w_pos=w_neg=0; "H-T only":
# gamma_pn_pos=gamma_pn_neg=0.
CONFIG_SECTIONS = {'comic': {
    'lambda_m': 1.0,                    # weight of the balanced branch's MFM loss
    'lambda_c': 0.2,                    # weight of every RLC loss (0: the -RLC ablation)
    'lambda_b': 1.0,                    # weight of the HTB loss
    'mfm': {
        'enabled': True,                # False: plain BCE wherever MFM is used (-MFM)
        'gamma_pn_pos': 0.0,            # gamma_pn+
        'gamma_pn_neg': 3.0,            # gamma_pn-
        'w_pos': 0.0,                   # w+
        'w_neg': 1.0,                   # w-
        'margin': 0.05,                 # m: probability shift on negatives
        'exponent': 1.0 / 3.0,          # g_ht = (1 - ln D_c) ** exponent
        'class_weight': True,           # multiply each class's term by g_ht[c] (authors' code)
        'official_cooccurrence': False,  # authors' code: positives' p x (1 - co-occurrence
                                        # share), co-occurring negatives' 1 - p_m x
                                        # cooccurrence_factor
        'cooccurrence_factor': 1.2,     # ... their factor on co-occurring negatives
    },
    'rlc': {
        'tau': 0.7,                     # correct y_c=0 when p_c > max(tau, P_c)
        'warmup_epochs': 1,             # no correction before this many epochs
        'class_means': 'epoch',         # P_c: 'epoch' running mean (reset each epoch) | 'ema'
        'ema_decay': 0.9,               # for class_means='ema'
        'margin': 0.0,                  # subtracted from positive logits in RLC (authors: 1.0)
        'weight_exponent': 1.0 / 3.0,   # exponent of RLC's class weights (authors' code: 1/6)
        'official_batch_mean': False,   # P_c = batch mean (authors' code)
        'official_positive_normalisation': False,  # scale by batch / #positive targets (authors)
        'official_adjusted_logits': False,  # head / tail RLC on energy-adjusted logits (authors)
        'official_shifted_means': False,  # P_c from the margin-shifted probabilities (authors)
        'official_margin_observed': False,  # margin on observed positives only, not corrected
        'official_focal_exponent': False,  # gamma- = gamma_pn- + w- g_ht ** weight_exponent
                                        # (authors: 3 + g^(1/6)), not MFM's exponent
    },
    'htb': {
        'enabled': True,                # False: the balanced model alone (-HTB)
        'alpha': 2.0,                   # kappa exponent
        'loss': 'product',              # reading of L_htb: 'product' (softmax(zhat) x
                                        # softmax(z_b), the paper's equation) | 'distill'
                                        # (softmax(zhat) as soft target) | 'distill_sigmoid'
                                        # (each class's sigmoid(zhat) as soft target) |
                                        # 'official' (the authors' file: MFM of the product,
                                        # kappa with a gradient)
        'temperature': 1.0,             # 'distill*': temperature T (loss times T^2)
        'beta': 1.0,                    # weight of the attention output (authors' code: 0.1)
        'attention_dim': 128,           # hidden size of the additive attention
        'attention_dropout': 0.1,
        'energy_decay': 0.9,            # mu of e_t = mu e_{t-1} + g_t
        'a_head': 1.0,                  # a_h: head model adds a_h x the energy term
        'a_tail': 1.0,                  # a_t: tail model removes a_t x the energy term
        'official_energy_signs': False,  # authors' code: head -1, tail +2
    },
}}

BRANCHES = ('head', 'tail', 'balanced')


def create_comic_network(config, num_classes: int,
                         teacher_classifier: str = '') -> comic_branches.ComicNet:
  """The three branches (or the balanced one alone without HTB), each with the method's
  classifier; the head and tail branches with `teacher_classifier` instead when given (COMIC+)."""
  classifier = registry.classifier_kind(config)
  branch = lambda kind: networks.create_network(config.model, num_classes, kind)
  if not config.comic.htb.enabled:
    return comic_branches.ComicNet(balanced=branch(classifier))
  attention = comic_branches.AdditiveAttention(config.comic.htb.attention_dim,
                                               config.comic.htb.attention_dropout)
  teacher = teacher_classifier or classifier
  return comic_branches.ComicNet(balanced=branch(classifier), head=branch(teacher),
                                 tail=branch(teacher), attention=attention,
                                 beta=config.comic.htb.beta)


class Comic(registry.Method):
  """Correction (RLC), modification (MFM) and balance (HTB) over three branches."""
  teacher_classifier = ''   # the head and tail branches' classifier ('': the method's)
  teacher_loss_name = branch_loss_name = 'mfm'   # what the branches' own losses compute

  def __init__(self, config, observed_labels: np.ndarray, steps_per_epoch: int,
               class_names=()):
    del class_names
    cc = config.comic
    self.config, self.cc = config, cc
    self.num_classes = observed_labels.shape[1]
    self.counts = jnp.asarray(np.asarray(observed_labels).sum(0), jnp.float32)   # n_c
    self.network = create_comic_network(config, self.num_classes, self.teacher_classifier)
    self.use_htb = cc.htb.enabled
    self.use_rlc = cc.lambda_c > 0
    self.branches = BRANCHES if self.use_htb else ('balanced',)
    self.report_names = ('COMIC', 'Head Model', 'Tail Model') if self.use_htb else ('COMIC',)
    self.streams = dict(registry.MAIN)
    if self.use_htb:   # the tail model's class-reversed batch R (RandAugment: augment config)
      self.streams['tail'] = StreamSpec('class_reversed', rand_augment=True, rng_index=1)
    self.mfm = mfm.MFMSettings.from_config(cc.mfm)
    # The authors' co-occurrence scaling of MFM (comic.mfm.official_cooccurrence): A from the
    # observed training labels.
    self.cooccurrence = (jnp.asarray(mfm.cooccurrence_matrix(observed_labels))
                         if self.mfm.cooccurrence_factor > 0 else None)
    self.steps_per_epoch = steps_per_epoch
    self.warmup_steps = int(cc.rlc.warmup_epochs * steps_per_epoch)
    self.class_means = 'batch' if cc.rlc.official_batch_mean else cc.rlc.class_means
    if cc.htb.official_energy_signs:
      self.energy_factor = {'head': -cc.htb.a_head, 'tail': 2.0 * cc.htb.a_tail}
    else:
      self.energy_factor = {'head': +cc.htb.a_head, 'tail': -cc.htb.a_tail}
    cos = config.model.cosine
    self.cosine = dict(scale=cos.scale, eta=cos.eta, num_groups=cos.num_groups)

  # ------------------------------------------------------------------ state
  def init(self, rng, batch):
    params_rng, dropout_rng = jax.random.split(rng)
    images = batch['main']['image']
    variables = self.network.init({'params': params_rng, 'dropout': dropout_rng}, images,
                                  train=False)
    method_state = {'rlc': {b: rlc.init_state(self.num_classes) for b in self.branches}}
    if self.use_htb:
      out = self.network.apply(variables, images, train=False)
      dim = out['head']['features'].shape[-1]
      energy = htb.energy_transform(self.cc.htb.energy_decay)
      method_state['energy'] = {b: energy.init(jnp.zeros((dim,), jnp.float32))
                                for b in ('head', 'tail')}
    return variables['params'], variables.get('batch_stats', {}), method_state

  # ------------------------------------------------------------------ pieces
  def adjusted_logits(self, params, branch: str, out: dict, energy_state) -> jnp.ndarray:
    """zhat_x of a branch's output with its energy (docs/method.md "Energy-adjusted logits")."""
    return htb.energy_adjusted_logits(
        out['logits'], out['features'], heads.class_weights(params[branch]['classifier']),
        energy_state.trace, factor=self.energy_factor[branch], **self.cosine)

  def htb_weights(self, loss_head, loss_tail):
    """(kappa_h, kappa_t) from the teachers' MFM losses on the batch (with a gradient only for
    the authors' HTB form, `comic.htb.loss='official'`)."""
    return htb.htb_weights(loss_head, loss_tail, self.cc.htb.alpha,
                           detach=self.cc.htb.loss != 'official')

  def teacher_loss(self, logits, labels):
    """The head and tail branches' own loss, and kappa's measure of their fit: MFM (logged as
    `<branch>_<teacher_loss_name>`)."""
    return self.mfm_loss(logits, labels)

  def branch_loss(self, logits, labels):
    """The balanced branch's own loss: MFM (logged as `balanced_<branch_loss_name>`)."""
    return self.mfm_loss(logits, labels)

  def mfm_loss(self, logits, labels):
    return mfm.mfm_loss_from_counts(logits, labels, self.counts, self.mfm,
                                    cooccurrence=self.cooccurrence)

  def rlc_term(self, state, logits, labels, labels_full, active, new_epoch, negatives=None):
    """(L_rlc, new RLC state, corrections in the batch) for one branch on one batch; `negatives`
    (labels known to be absent) are never corrected."""
    cr = self.cc.rlc
    state = rlc.reset_epoch(state, new_epoch, keep_means=self.class_means == 'ema')
    # P_c: from the margin-shifted probabilities in the authors' code (official_shifted_means).
    mean_logits = (rlc.shift_positives(logits, labels, cr.margin) if cr.official_shifted_means
                   else logits)
    state, class_means = rlc.update_class_means(state, jax.nn.sigmoid(mean_logits),
                                                mode=self.class_means, ema_decay=cr.ema_decay)
    yhat = rlc.correct_labels(jax.nn.sigmoid(logits), labels, class_means, tau=cr.tau,
                              active=active, negatives=negatives)
    state = rlc.count_corrections(state, yhat, labels_full)
    loss = rlc.rlc_loss(logits, labels, yhat, self.counts + state['corrections'], self.mfm,
                        margin=cr.margin, weight_exponent=cr.weight_exponent,
                        positive_normalisation=cr.official_positive_normalisation,
                        margin_observed_only=cr.official_margin_observed,
                        focal_exponent=(cr.weight_exponent if cr.official_focal_exponent
                                        else None))
    return loss, state, yhat.sum()

  # ------------------------------------------------------------------ the step's loss
  def teacher_terms(self, params, batch_stats, energy, batch, rlc_for, terms, metrics):
    """The head branch on U and the tail branch on R, their own loss (and RLC) terms put in
    `terms` and `metrics`, their energies updated in `energy`; the tail branch on U as HTB's
    constant. -> (batch_stats, zhat_h, zhat_tu, the head and tail features of U's images: the
    balanced branch's attention context)."""
    cc, apply = self.cc, self.network.apply
    u_img, u_y, u_full = (batch['main'][k] for k in ('image', 'label', 'label_full'))
    u_neg = batch['main'].get('label_negative')
    # Head branch on U.
    out_h, upd = apply({'params': params, 'batch_stats': batch_stats}, u_img, train=True,
                       method='head_forward', mutable=['batch_stats'])
    batch_stats = upd['batch_stats']
    energy['head'] = htb.update_energy(energy['head'], out_h['features'], cc.htb.energy_decay)
    zhat_h = self.adjusted_logits(params, 'head', out_h, energy['head'])
    terms['head'] = metrics[f'head_{self.teacher_loss_name}'] = self.teacher_loss(
        out_h['logits'], u_y)
    if self.use_rlc:
      logits = zhat_h if cc.rlc.official_adjusted_logits else out_h['logits']
      terms['head'] += rlc_for('head', logits, u_y, u_full, u_neg)
    # Tail branch on R (its training batch; its batch statistics come from R only) ...
    r_img, r_y, r_full = (batch['tail'][k] for k in ('image', 'label', 'label_full'))
    out_t, upd = apply({'params': params, 'batch_stats': batch_stats}, r_img, train=True,
                       method='tail_forward', mutable=['batch_stats'])
    batch_stats = upd['batch_stats']
    energy['tail'] = htb.update_energy(energy['tail'], out_t['features'], cc.htb.energy_decay)
    terms['tail'] = metrics[f'tail_{self.teacher_loss_name}'] = self.teacher_loss(
        out_t['logits'], r_y)
    if self.use_rlc:
      logits = (self.adjusted_logits(params, 'tail', out_t, energy['tail'])
                if cc.rlc.official_adjusted_logits else out_t['logits'])
      terms['tail'] += rlc_for('tail', logits, r_y, r_full,
                               batch['tail'].get('label_negative'))
    # ... and on U, as a constant for HTB.
    out_tu, _ = apply({'params': params, 'batch_stats': batch_stats}, u_img, train=True,
                      method='tail_forward', mutable=['batch_stats'])
    out_tu = jax.lax.stop_gradient(out_tu)
    zhat_tu = jax.lax.stop_gradient(self.adjusted_logits(params, 'tail', out_tu, energy['tail']))
    context = jnp.stack([out_h['features'], out_tu['features']], axis=1)
    return batch_stats, zhat_h, zhat_tu, context

  def loss_terms(self, params, batch_stats, method_state, batch, rng, step):
    """Each branch's own loss: ({'head', 'tail', 'balanced'}, (batch_stats, state, metrics)).

    The stop-gradients make the gradient of a branch's term zero for every other branch's
    parameters, so the gradient of the sum trains each branch by its own terms (tested).
    """
    cc = self.cc
    new_epoch = step % self.steps_per_epoch == 0
    active = step >= self.warmup_steps
    rlc_state = dict(method_state['rlc'])
    new_state = {'rlc': rlc_state}
    metrics, terms = {}, {}
    apply = self.network.apply
    u_img, u_y, u_full = (batch['main'][k] for k in ('image', 'label', 'label_full'))
    u_neg = batch['main'].get('label_negative')

    def rlc_for(branch, logits, labels, full, negatives):
      loss, rlc_state[branch], n = self.rlc_term(rlc_state[branch], logits, labels, full, active,
                                                 new_epoch, negatives)
      metrics[f'{branch}_corrections'] = n
      metrics[f'{branch}_rlc'] = loss
      return cc.lambda_c * loss

    context = zhat_h = zhat_tu = None
    if self.use_htb:
      energy = dict(method_state['energy'])
      new_state['energy'] = energy
      batch_stats, zhat_h, zhat_tu, context = self.teacher_terms(
          params, batch_stats, energy, batch, rlc_for, terms, metrics)

    # Balanced branch on U, fused with the head and tail features of the same images.
    out_b, upd = apply({'params': params, 'batch_stats': batch_stats}, u_img, context,
                       train=True, method='balanced_forward', mutable=['batch_stats'],
                       rngs={'dropout': rng})
    batch_stats = upd['batch_stats']
    own = metrics[f'balanced_{self.branch_loss_name}'] = self.branch_loss(out_b['logits'], u_y)
    terms['balanced'] = cc.lambda_m * own
    if self.use_rlc:
      terms['balanced'] += rlc_for('balanced', out_b['logits'], u_y, u_full, u_neg)
    if self.use_htb and cc.lambda_b > 0:
      kappa_h, kappa_t = self.htb_weights(self.teacher_loss(zhat_h, u_y),
                                          self.teacher_loss(zhat_tu, u_y))
      loss_htb = htb.htb_loss_of(cc.htb.loss, zhat_h, zhat_tu, out_b['logits'], u_y, kappa_h,
                                 kappa_t, cc.htb.temperature, mfm_loss=self.branch_loss)
      terms['balanced'] += cc.lambda_b * loss_htb
      metrics.update(htb=loss_htb, kappa_head=kappa_h)
    return terms, (batch_stats, new_state, metrics)

  def loss(self, params, batch_stats, method_state, batch, rng, step):
    terms, (batch_stats, new_state, metrics) = self.loss_terms(
        params, batch_stats, method_state, batch, rng, step)
    total = sum(terms.values())
    metrics['loss'] = total
    return total, (batch_stats, new_state, metrics)

  # ------------------------------------------------------------------ test time
  def predict(self, params, batch_stats, method_state, images):
    out = self.network.apply({'params': params, 'batch_stats': batch_stats}, images, train=False)
    preds = {'COMIC': out['balanced']['logits']}
    if self.use_htb:
      for branch, name in (('head', 'Head Model'), ('tail', 'Tail Model')):
        preds[name] = self.adjusted_logits(params, branch, out[branch],
                                           method_state['energy'][branch])
    return preds

  def is_loss_metric(self, name: str) -> bool:
    """Every step metric but the correction counts and kappa is a loss."""
    return not (name.endswith('_corrections') or name.startswith('kappa'))

  def epoch_summary(self, method_state) -> dict:
    """RLC corrections of the epoch per branch: made, true (a hidden label), false."""
    out = {}
    for branch, state in method_state['rlc'].items():
      made = int(np.asarray(state['corrections']).sum())
      true = int(np.asarray(state['true_corrections']).sum())
      out[branch] = {'corrections': made, 'true': true, 'false': made - true}
    return {'rlc': out}


# ------------------------------------------------------------------------------- registration

def validate(config) -> None:
  """Checks config.comic (docs/method.md)."""
  cc = config.comic

  def non_negative(name, value):
    require(value >= 0, f'config.comic.{name}={value!r} must be >= 0')

  for name in ('lambda_m', 'lambda_c', 'lambda_b'):
    non_negative(name, cc[name])
  for name in ('gamma_pn_pos', 'gamma_pn_neg', 'w_pos', 'w_neg', 'margin', 'exponent',
               'cooccurrence_factor'):
    non_negative(f'mfm.{name}', cc.mfm[name])
  require(0.0 <= cc.rlc.tau <= 1.0, f'config.comic.rlc.tau={cc.rlc.tau!r} must be in [0, 1]')
  require(cc.rlc.class_means in ('epoch', 'ema'),
          f"config.comic.rlc.class_means={cc.rlc.class_means!r} is not one of: epoch, ema")
  non_negative('rlc.warmup_epochs', cc.rlc.warmup_epochs)
  non_negative('htb.alpha', cc.htb.alpha)
  require(cc.htb.attention_dim > 0,
          f'config.comic.htb.attention_dim={cc.htb.attention_dim!r} must be > 0')
  require(cc.htb.loss in htb.HTB_LOSSES,
          f'config.comic.htb.loss={cc.htb.loss!r} is not one of: {", ".join(htb.HTB_LOSSES)}')
  require(cc.htb.temperature > 0,
          f'config.comic.htb.temperature={cc.htb.temperature!r} must be > 0')
  require(0.0 <= cc.htb.energy_decay < 1.0,
          f'config.comic.htb.energy_decay={cc.htb.energy_decay!r} must be in [0, 1)')


# What the authors' code computes where it differs from the paper and where that is well defined
# (docs/method.md "Paper vs the authors' code vs comic-jax"). Model-side options (frozen backbone,
# log-softmax features) and evaluation choices are left out: they are not part of the method.
# Their training loop has the HTB loss commented out (`comic.lambda_b=0`); OFFICIAL_WITH_HTB puts
# their HTB loss file back in.
OFFICIAL = (('comic.rlc.margin', 1.0), ('comic.rlc.weight_exponent', 1.0 / 6.0),
            ('comic.rlc.warmup_epochs', 0), ('comic.rlc.official_batch_mean', True),
            ('comic.rlc.official_positive_normalisation', True),
            ('comic.rlc.official_adjusted_logits', True),
            ('comic.rlc.official_shifted_means', True),
            ('comic.rlc.official_margin_observed', True),
            ('comic.rlc.official_focal_exponent', True),
            ('comic.mfm.official_cooccurrence', True),
            ('comic.htb.official_energy_signs', True), ('comic.htb.beta', 0.1),
            ('comic.lambda_b', 0.0))
OFFICIAL_WITH_HTB = OFFICIAL[:-1] + (('comic.htb.loss', 'official'),)

# The paper's studies (docs/method.md "Ablations"): `--preset=modules` and `--preset=mfm_factors`;
# `--preset=official`: the paper's COMIC beside what the authors' code computes.
STUDIES = {
    'modules': (StudyRow('', 'COMIC'),
                StudyRow('no_rlc', '-RLC', (('comic.lambda_c', 0.0),)),
                StudyRow('no_mfm', '-MFM', (('comic.mfm.enabled', False),)),
                StudyRow('no_htb', '-HTB', (('comic.htb.enabled', False),))),
    'mfm_factors': (StudyRow('mfm_pn', 'P-N only', (('comic.mfm.w_pos', 0.0),
                                                     ('comic.mfm.w_neg', 0.0))),
                    StudyRow('mfm_ht', 'H-T only', (('comic.mfm.gamma_pn_pos', 0.0),
                                                     ('comic.mfm.gamma_pn_neg', 0.0))),
                    StudyRow('', 'P-N + H-T')),
    'official': (StudyRow('', 'COMIC (paper)'),
                 StudyRow('official', "COMIC (authors' code)", OFFICIAL),
                 StudyRow('official_htb', "COMIC (authors' code + their HTB loss)",
                          OFFICIAL_WITH_HTB)),
}

registry.register(MethodSpec(
    'comic', 'COMIC', 'PLT-MLC', Comic, classifier='cosine',
    table_models=('Head Model', 'Tail Model', 'COMIC'), validate=validate, studies=STUDIES,
    config_sections=('comic',)))
