"""Mixed float16 (Keras' GPU policy) trains on every backend, and learning-rate schedules and
callbacks reach both optimizers.

Under "mixed_float16" Keras' `compile` wraps `optimizer` in a `LossScaleOptimizer`, which
divides the gradients by its loss scale (2**15): a train step that does not multiply the loss
by the same scale moves the weights by ~1/32768 of the float32 step. These tests run under
whatever backend pytest runs with (CI: TensorFlow, JAX and PyTorch).
"""

import math

import keras
import numpy as np
import pytest

from helpers import tiny

pytestmark = pytest.mark.backend


@pytest.fixture
def policy():
    """Sets the global dtype policy for the models a test builds; restores float32 after."""
    def set_policy(name):
        keras.mixed_precision.set_global_policy(name)
    yield set_policy
    keras.mixed_precision.set_global_policy("float32")


def _batch(n=8, size=16):
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype="uint8")


def _weights(variables):
    return [np.array(keras.ops.convert_to_numpy(v), dtype="float64") for v in variables]


def _step(policy, name, lam, optimizer=None, discriminator_optimizer=None, jit_compile="auto"):
    """(model, encoder-variable deltas, discriminator-variable deltas) of one SGD step from
    seed-0 weights under dtype policy `name`."""
    policy(name)
    keras.utils.set_random_seed(0)
    model = tiny(critic="infonce", infomin_weight=lam)
    model.compile(optimizer=optimizer or keras.optimizers.SGD(0.1),
                  discriminator_optimizer=discriminator_optimizer or keras.optimizers.SGD(0.1),
                  jit_compile=jit_compile)
    enc0, disc0 = _weights(model.encoder_variables), _weights(model.discriminator_variables)
    model.train_on_batch(_batch())
    enc1, disc1 = _weights(model.encoder_variables), _weights(model.discriminator_variables)
    policy("float32")
    return (model, [b - a for a, b in zip(enc0, enc1)],
            [b - a for a, b in zip(disc0, disc1)])


def _direction_and_size(reference, other):
    """(cosine between the two steps, ratio of their sizes), over all variables."""
    a = np.concatenate([d.ravel() for d in reference])
    b = np.concatenate([d.ravel() for d in other])
    return a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), np.linalg.norm(b) / np.linalg.norm(a)


@pytest.mark.parametrize("lam", [0.0, 0.5])
@pytest.mark.fp16
def test_one_mixed_float16_step_moves_the_weights_like_the_float32_step(policy, lam):
    _, enc32, disc32 = _step(policy, "float32", lam)
    model, enc16, disc16 = _step(policy, "mixed_float16", lam)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.discriminator_optimizer, keras.optimizers.LossScaleOptimizer)
    # float16 keeps 11 bits, and the tiny model's InfoNCE gradient is sensitive to its
    # scores: measured, the steps point within cos 0.98 of each other and differ in size by
    # under 10%. A loss left unscaled makes the step ~2**15 times too small; scaled twice, too
    # large.
    for reference, other in ((enc32, enc16), (disc32, disc16)):
        cosine, size = _direction_and_size(reference, other)
        assert cosine > 0.95 and 0.8 < size < 1.25, (cosine, size)


@pytest.mark.fp16
def test_mixed_float16_under_xla_moves_the_weights_like_the_float32_step(policy):
    """Keras compiles TensorFlow's step with XLA by default on a GPU (jit_compile="auto")."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("jit_compile=True is XLA on TensorFlow")
    _, enc32, disc32 = _step(policy, "float32", 0.5)
    model, enc16, disc16 = _step(policy, "mixed_float16", 0.5, jit_compile=True)
    assert model.jit_compile is True
    for reference, other in ((enc32, enc16), (disc32, disc16)):
        cosine, size = _direction_and_size(reference, other)
        assert cosine > 0.95 and 0.8 < size < 1.25, (cosine, size)


@pytest.mark.fp16
def test_an_overflowing_step_is_skipped_and_both_scales_are_halved(policy):
    # A loss scale of 2**40 overflows float16's largest value (65504) in the backward pass.
    scaled = [keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1),
                                                  initial_scale=2.0 ** 40) for _ in range(2)]
    model, enc, disc = _step(policy, "mixed_float16", 0.5, *scaled)
    assert all(np.all(d == 0) for d in enc + disc)
    for optimizer in (model.optimizer, model.discriminator_optimizer):
        assert optimizer is not None
        assert float(keras.ops.convert_to_numpy(optimizer.dynamic_scale)) == 2.0 ** 39
    # The next step, at a scale that fits, trains.
    policy("mixed_float16")
    for optimizer in (model.optimizer, model.discriminator_optimizer):
        optimizer.dynamic_scale.assign(2.0 ** 10)
    before = _weights(model.encoder_variables + model.discriminator_variables)
    model.train_on_batch(_batch())
    after = _weights(model.encoder_variables + model.discriminator_variables)
    assert all(np.all(np.isfinite(w)) for w in after)
    assert sum(float(np.abs(b - a).sum()) for a, b in zip(before, after)) > 0


@pytest.mark.fp16
def test_the_scale_grows_after_dynamic_growth_steps_finite_steps(policy):
    scaled = [keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01),
                                                  initial_scale=2.0 ** 4,
                                                  dynamic_growth_steps=2) for _ in range(2)]
    policy("mixed_float16")
    model = tiny(critic="infonce", infomin_weight=0.5)
    model.compile(optimizer=scaled[0], discriminator_optimizer=scaled[1])
    scales = []
    for _ in range(3):
        model.train_on_batch(_batch())
        scales.append([float(keras.ops.convert_to_numpy(o.dynamic_scale)) for o in scaled])
    assert scales == [[16.0, 16.0], [32.0, 32.0], [32.0, 32.0]]


def test_mixed_bfloat16_is_not_loss_scaled_and_trains(policy):
    from helpers import bf16_matmul_unavailable

    if bf16_matmul_unavailable():
        pytest.skip(bf16_matmul_unavailable())
    _, enc32, _ = _step(policy, "float32", 0.5)
    model, enc_bf16, _ = _step(policy, "mixed_bfloat16", 0.5)
    assert not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert not isinstance(model.discriminator_optimizer, keras.optimizers.LossScaleOptimizer)
    norm32 = math.sqrt(sum(np.sum(d ** 2) for d in enc32))
    norm16 = math.sqrt(sum(np.sum(d ** 2) for d in enc_bf16))
    assert 0.8 < norm16 / norm32 < 1.25


@pytest.mark.fp16
def test_save_load_and_continue_keep_both_loss_scales(policy, tmp_path):
    import keras_infobal as kib

    policy("mixed_float16")
    model = tiny(critic="infonce", infomin_weight=0.5)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  discriminator_optimizer=keras.optimizers.Adam(1e-3))
    model.train_on_batch(_batch())
    model.optimizer.dynamic_scale.assign(2.0 ** 9)
    model.discriminator_optimizer.dynamic_scale.assign(2.0 ** 7)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = kib.load_infobal(path)
    scales = [float(keras.ops.convert_to_numpy(o.dynamic_scale))
              for o in (loaded.optimizer, loaded.discriminator_optimizer)]
    assert scales == [2.0 ** 9, 2.0 ** 7]
    before = _weights(loaded.encoder_variables)
    loaded.train_on_batch(_batch())
    after = _weights(loaded.encoder_variables)
    assert all(np.all(np.isfinite(w)) for w in after)
    assert max(float(np.abs(b - a).max()) for a, b in zip(before, after)) > 1e-4


# ------------------------------------------------------------ learning rates of both optimizers

def _rate(optimizer):
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def _compiled(encoder_rate=0.1, discriminator_rate=0.05, **compile_kwargs):
    model = tiny(critic="infonce", infomin_weight=0.5)
    model.compile(optimizer=keras.optimizers.SGD(encoder_rate),
                  discriminator_optimizer=keras.optimizers.SGD(discriminator_rate),
                  **compile_kwargs)
    return model


def test_a_learning_rate_callback_reaches_the_discriminators_at_the_compiled_ratio():
    model = _compiled()
    assert model.discriminator_lr_ratio == pytest.approx(0.5)
    callback = keras.callbacks.LearningRateScheduler(lambda epoch: 0.1 / (epoch + 1) ** 2)
    model.fit(_batch(), batch_size=8, epochs=3, callbacks=[callback], verbose=0)
    assert _rate(model.optimizer) == pytest.approx(0.1 / 9)
    assert _rate(model.discriminator_optimizer) == pytest.approx(0.5 * 0.1 / 9, rel=1e-5)


def test_an_encoder_schedule_drives_a_constant_discriminator_rate():
    schedule = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=10)
    model = tiny(critic="infonce", infomin_weight=0.5)
    model.compile(optimizer=keras.optimizers.SGD(schedule),
                  discriminator_optimizer=keras.optimizers.SGD(0.2))
    assert model.discriminator_lr_ratio == pytest.approx(2.0)
    for _ in range(3):
        model.train_on_batch(_batch())
    # The third step (encoder iteration 2) set the discriminators' rate before its update.
    cosine = 0.1 * 0.5 * (1 + math.cos(math.pi * 2 / 10))
    assert _rate(model.discriminator_optimizer) == pytest.approx(2.0 * cosine, rel=1e-5)


def test_a_discriminator_schedule_of_its_own_is_kept():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=1, decay_rate=0.5)
    model = tiny(critic="infonce", infomin_weight=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  discriminator_optimizer=keras.optimizers.SGD(schedule))
    assert model.discriminator_lr_ratio is None
    model.optimizer.learning_rate = 0.01
    for _ in range(2):
        model.train_on_batch(_batch())
    assert _rate(model.discriminator_optimizer) == pytest.approx(0.05 * 0.5 ** 2, rel=1e-5)


@pytest.mark.parametrize("ratio, expected", [(None, 0.05), (3.0, 0.03)])
def test_an_explicit_ratio_or_none(ratio, expected):
    model = _compiled(discriminator_lr_ratio=ratio)
    model.optimizer.learning_rate = 0.01
    model.train_on_batch(_batch())
    assert _rate(model.discriminator_optimizer) == pytest.approx(expected, rel=1e-5)


def test_the_followed_rate_sets_the_size_of_the_discriminator_update():
    """Two models from the same weights whose encoder rates differ by 4x after compile: the
    discriminators' SGD steps differ by 4x too (the same gradient, the followed rate)."""
    steps = []
    for rate in (0.02, 0.005):
        keras.utils.set_random_seed(0)
        model = _compiled(encoder_rate=0.1, discriminator_rate=0.1)
        model.optimizer.learning_rate = rate
        before = _weights(model.discriminator_variables)
        model.train_on_batch(_batch())
        after = _weights(model.discriminator_variables)
        steps.append(np.concatenate([(b - a).ravel() for a, b in zip(before, after)]))
    # atol: the steps are differences of float32 weights of size ~1 (ulp ~1e-7).
    np.testing.assert_allclose(steps[0], 4 * steps[1], rtol=1e-3, atol=1e-6)


def test_the_resolved_ratio_survives_save_and_load(tmp_path):
    import keras_infobal as kib

    model = _compiled()
    model.optimizer.learning_rate = 0.01  # "auto" resolved again here would give 5.0
    model.train_on_batch(_batch())
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = kib.load_infobal(path)
    assert loaded.discriminator_lr_ratio == pytest.approx(0.5)


@pytest.mark.parametrize("ratio, match", [
    (0.0, "positive finite"), (-1.0, "positive finite"), (float("nan"), "positive finite"),
    ("half", "positive finite"), (True, "positive finite")])
def test_bad_ratios_are_refused(ratio, match):
    with pytest.raises(ValueError, match=match):
        _compiled(discriminator_lr_ratio=ratio)


def test_a_frozen_encoder_leaves_the_discriminator_rate_alone():
    model = _compiled(encoder_rate=0.0, discriminator_rate=0.05)
    assert model.discriminator_lr_ratio is None
    model.train_on_batch(_batch())
    assert _rate(model.discriminator_optimizer) == pytest.approx(0.05)


def test_a_ratio_with_a_discriminator_schedule_is_refused():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=1, decay_rate=0.5)
    model = tiny(critic="infonce", infomin_weight=0.5)
    with pytest.raises(ValueError, match="schedule of its own"):
        model.compile(optimizer=keras.optimizers.SGD(0.1),
                      discriminator_optimizer=keras.optimizers.SGD(schedule),
                      discriminator_lr_ratio=2.0)
