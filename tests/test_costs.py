"""The cost lines printed before long steps: image counts and estimates from measured rates."""
from comic_jax.training import costs


def test_feature_cache_line_counts_views_and_estimates_from_the_measured_rate():
  line = costs.features_line('cpu', 'efficientnet_lite0', 224,
                             {'training': (240, 4), 'validation': (60, 0), 'test': (100, 0)})
  assert line.startswith('feature cache: frozen efficientnet_lite0 at 224 px over 1,120 images '
                         '(240 training x 4 views, 60 validation, 100 test); ')
  # 1,120 images at 71.6 and 18 img/s: 15.6 s and 62.2 s (the own-photos route took 62 s).
  assert 'estimate 16 s to 62 s from the 18-72 img/s measured at 224 px' in line


def test_rates_are_scaled_by_pixels_from_the_nearest_measured_size():
  rate = costs.find_rate('cpu', 'features', 'efficientnet_lite0', 'any', 128)
  assert rate.size == 96
  # 10,000 images at 154 and 341.8 img/s x (96/128)^2: 115.5 and 51.9 s.
  assert costs.estimate(10000, rate, 128).startswith('estimate 52 s to 2 min from the 154-342 '
                                                     'img/s measured at 96 px')
  assert costs.find_rate('cpu', 'train', 'resnet50', 'comic', 224) is None
  assert costs.estimate(5, None, 224).startswith('no measured rate')


def test_run_line_before_the_training_steps():
  import ml_collections
  config = ml_collections.ConfigDict(dict(
      method='comic', num_epochs=30, batch_size=32,
      model=dict(feature_cache=False, backbone='small_cnn'), data=dict(image_size=32)))
  line = costs.run_line(config, 43, 2, 0, 'cpu')
  # 30 x 43 x 32 = 41,280 images at 775 and 755 img/s: 53.3 and 54.7 s.
  assert line == ('comic: 30 epochs x 43 steps, global batch 32 on 2 device(s): 41,280 training '
                  'images (small_cnn at 32 px) on cpu; estimate 53 s to 55 s from the 755-775 '
                  'img/s measured at 32 px on a 2-core AMD EPYC (docs/performance.md), plus '
                  'compilation and evaluation')
  assert costs.run_line(config, 43, 2, 30 * 43, 'cpu').endswith('on 2 device(s)')   # finished
  config.model.backbone = 'mlp'
  assert '(mlp on feature vectors) on cpu; no measured rate' in costs.run_line(config, 43, 2, 0,
                                                                              'cpu')
  config.model.backbone = 'small_cnn'
  config.method = 'bce'
  assert 'on an H200 GPU' in costs.run_line(config, 43, 1, 0, 'gpu')
