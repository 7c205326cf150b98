import keras
import numpy as np
import pytest
# tf.data input is accepted on every backend (TensorFlow is a dependency everywhere).
import tensorflow as tf
from keras import ops

from helpers import infomax_critics, infomin_critics, optimizers, tiny
from keras_infobal import InfoBal, InfoBalBackbone

# The core model tests: CI runs them under TensorFlow, JAX and PyTorch (`pytest -m backend`).
pytestmark = pytest.mark.backend


def make(tiny_config, **kwargs):
    return tiny(**{**tiny_config, **kwargs})


def snapshot(variables):
    return [np.array(v) for v in variables]


def changed(before, variables):
    return [not np.array_equal(b, np.array(v)) for b, v in zip(before, variables)]


def test_one_step_fit_dim_and_infobal(tiny_config, images):
    for lam in (0.0, 1.0):
        model = make(tiny_config, infomin_weight=lam)
        model.compile(**optimizers()) if lam else model.compile(optimizer="adam")
        hist = model.fit(images, batch_size=4, epochs=1, verbose=0)
        logs = {k: v[-1] for k, v in hist.history.items()}
        assert {"loss", "objective", "mi_R_V1", "mi_R_V2"} <= set(logs)
        assert ("mi_V1_V2" in logs) == (lam > 0)
        assert ("discriminator_objective" in logs) == (lam > 0)
        assert all(np.isfinite(v) for v in logs.values())
        assert logs["loss"] == pytest.approx(-logs["objective"], rel=1e-5)


def test_objective_combines_terms_with_weights(tiny_config, images):
    model = make(tiny_config, infomin_weight=0.5, view_weights=[1.0, 2.0],
                 num_views=2)
    model.compile(**optimizers())
    logs = model.evaluate(images, batch_size=8, verbose=0, return_dict=True)
    expected = logs["mi_R_V1"] + 2.0 * logs["mi_R_V2"] - 0.5 * logs["mi_V1_V2"]
    assert logs["objective"] == pytest.approx(expected, abs=1e-4)


def test_evaluate_changes_no_variable(tiny_config, images):
    model = make(tiny_config)
    model.compile(**optimizers())
    before = snapshot(model.variables)
    model.evaluate(images, batch_size=4, verbose=0)
    assert not any(changed(before, model.variables))


def test_each_update_changes_exactly_its_own_variables(tiny_config, images):
    model = make(tiny_config, infomin_weight=1.0)
    model.compile(**optimizers())
    enc_vars = model.backbone.encoder.variables + model.backbone.aggregator.variables + [
        v for c in infomax_critics(model) for v in c.variables]
    disc_vars = list(infomin_critics(model).variables)  # all pairs' critics, stacked
    x = ops.convert_to_tensor(images)

    views = model.backbone.encoder(x, training=False)
    enc_before, disc_before = snapshot(enc_vars), snapshot(disc_vars)
    model.discriminator_step(views)
    assert not any(changed(enc_before, enc_vars)), "the discriminator step moved the encoder"
    assert any(changed(disc_before, disc_vars))

    enc_before, disc_before = snapshot(enc_vars), snapshot(disc_vars)
    model.encoder_step(x)
    assert not any(changed(disc_before, disc_vars)), "the encoder step moved the discriminator"
    assert any(changed(enc_before, enc_vars))
    # Every trainable encoder-side weight receives a gradient (nothing is disconnected).
    trainable = model.encoder_variables
    before = snapshot(trainable)
    model.encoder_step(x)
    assert all(changed(before, trainable))


def test_dim_baseline_skips_the_discriminator(tiny_config, images):
    model = make(tiny_config, infomin_weight=0.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))  # no discriminator optimizer needed
    disc_before = snapshot(model.discriminator_variables)
    model.fit(images, batch_size=4, epochs=1, verbose=0)
    assert not any(changed(disc_before, model.discriminator_variables))
    assert not model.discriminator_active


def test_a_discriminator_optimizer_at_lambda_0_trains_the_monitor(tiny_config, images):
    model = make(tiny_config, infomin_weight=0.0)
    model.compile(**optimizers())
    assert model.discriminator_active
    disc_before = snapshot(model.discriminator_variables)
    hist = model.fit(images, batch_size=4, epochs=1, verbose=0)
    assert "mi_V1_V2" in hist.history
    assert any(changed(disc_before, model.discriminator_variables))


def test_predict_and_features(tiny_config, images):
    model = make(tiny_config)
    r = model.predict(images, batch_size=4, verbose=0)
    assert r.shape == (8, 8)
    feats = model.extract_features(images, layers=("local", "conv", "fc", "R"))
    assert feats["local"].shape == (8, 4 * 4 * 16)
    assert feats["conv"].shape == (8, 2 * 1 * 2 * 16)
    assert feats["fc"].shape == (8, 32)
    np.testing.assert_allclose(feats["R"], r, atol=1e-5)
    with pytest.raises(ValueError, match="Unknown feature layers"):
        model.extract_features(images, layers=("logits",))


def test_save_load_restores_weights_both_optimizers_and_training(tiny_config, images, tmp_path):
    keras.utils.set_random_seed(1)
    model = make(tiny_config, infomin_weight=1.0)
    model.compile(**optimizers())
    model.fit(images, batch_size=4, epochs=1, verbose=0, shuffle=False)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, InfoBal)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_allclose(loaded.predict(images, verbose=0),
                               model.predict(images, verbose=0), atol=1e-6)
    for a, b in ((model.optimizer, loaded.optimizer),
                 (model.discriminator_optimizer, loaded.discriminator_optimizer)):
        assert int(b.iterations) == int(a.iterations) == 2
        for va, vb in zip(a.variables, b.variables):
            np.testing.assert_allclose(np.array(va), np.array(vb), atol=1e-7)
    # Training continues from the same point: one more identical step on each copy.
    x = images[:4]
    model.train_on_batch(x)
    loaded.train_on_batch(x)
    for va, vb in zip(model.trainable_variables, loaded.trainable_variables):
        np.testing.assert_allclose(np.array(va), np.array(vb), atol=1e-5)


def test_weights_validation():
    with pytest.raises(ValueError, match=r"one weight per view, shape \(2,\)"):
        InfoBal(view_weights=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="2x2 matrix"):
        InfoBal(correlation_weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="symmetric"):
        InfoBal(correlation_weights=[[1.0, 2.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="non-negative"):
        InfoBal(view_weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="non-negative"):
        InfoBal(correlation_weights=[[1.0, -1.0], [-1.0, 1.0]])
    with pytest.raises(ValueError, match="infomin_weight"):
        InfoBal(infomin_weight=float("nan"))
    with pytest.raises(ValueError, match="critic"):
        InfoBal(critic="mine")
    with pytest.raises(ValueError, match="discriminator_steps"):
        InfoBal(discriminator_steps=0)
    with pytest.raises(ValueError, match="does not divide"):
        InfoBal(InfoBalBackbone(num_views=3, image_shape=(32, 32, 3)))
    with pytest.raises(ValueError, match="image_shape"):
        InfoBalBackbone(image_shape=(32, 32))
    with pytest.raises(ValueError, match="InfoBalBackbone"):
        InfoBal(backbone=keras.Sequential([]))
    with pytest.raises(ValueError, match="critic_units"):
        InfoBal(critic_units=0)


def test_fit_errors(tiny_config, images):
    model = make(tiny_config, infomin_weight=1.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    with pytest.raises(ValueError, match="discriminator_optimizer"):
        model.fit(images, batch_size=4, epochs=1, verbose=0)

    model = make(tiny_config, infomin_weight=0.0)
    model.compile(optimizer="adam")
    with pytest.raises(Exception, match="at least 2 images"):
        model.fit(images[:1], batch_size=1, epochs=1, verbose=0)
    ds = tf.data.Dataset.from_tensor_slices(images).batch(1, drop_remainder=True)
    with pytest.raises(ValueError, match="at least 2 images"):
        model.fit(ds, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        model.fit(np.zeros((4, 16, 16), "uint8"), batch_size=2, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="3 channels"):
        model.fit(np.zeros((4, 16, 16, 1), "uint8"), batch_size=2, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="do not pass `loss`"):
        model.compile(optimizer="adam", loss="mse")
    opt = keras.optimizers.Adam()
    with pytest.raises(ValueError, match="different optimizer instance"):
        model.compile(optimizer=opt, discriminator_optimizer=opt)


@pytest.mark.parametrize("size", [16, 24])
def test_an_unbuilt_model_takes_its_image_size_from_the_data(tiny_config, size):
    """Arrays and tf.data alike; the size is then fixed, and another one is refused by name
    before any inner layer runs."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, size, size, 3), dtype="uint8")
    for data in (images, tf.data.Dataset.from_tensor_slices(images).batch(4)):
        model = make(tiny_config, image_shape=None, infomin_weight=1.0)
        assert not model.built
        model.compile(**optimizers())
        fit_kwargs = {"batch_size": 4} if data is images else {}
        model.fit(data, epochs=1, verbose=0, **fit_kwargs)
        assert model.backbone.image_shape == (size, size, 3)
        assert model.backbone.get_config()["image_shape"] == [size, size, 3]
        other = size + 8
        wrong = np.zeros((4, other, other, 3), "uint8")
        message = f"built for {size}x{size} images; got {other}x{other}"
        for call in (lambda: model.predict(wrong, verbose=0),
                     lambda: model.fit(wrong, batch_size=4, verbose=0),
                     lambda: model.evaluate(wrong, batch_size=4, verbose=0),
                     lambda: model.extract_features(wrong),
                     lambda: model(wrong),
                     lambda: model.backbone.predict(wrong, verbose=0)):
            with pytest.raises(ValueError, match=message):
                call()


@pytest.mark.parametrize("kwargs", [
    dict(num_views=4, split="grid", aggregator="attention", critic="shared dv"),
    dict(num_views=2, split="columns", aggregator="mean", critic="infonce",
         infomin_critic="nwj", view_pooling="flatten", discriminator_steps=2),
    dict(num_views=2, split="separate", critic="concat jsd"),
    dict(num_views=1, critic="jsd"),
])
def test_configurations_train_and_roundtrip(tiny_config, images, tmp_path, kwargs):
    from keras_infobal import DVCritic, JSDCritic

    kwargs = dict(kwargs)
    if kwargs["critic"] == "shared dv":  # one critic instance for every view
        kwargs["critic"] = DVCritic(units=16)
    elif kwargs["critic"] == "concat jsd":  # one critic per view, another scorer
        kwargs["critic"] = [JSDCritic(units=16, scorer="concat", name=f"c{i}") for i in (1, 2)]
    model = make(tiny_config, **kwargs)
    model.compile(**optimizers())
    hist = model.fit(images, batch_size=4, epochs=1, verbose=0)
    assert all(np.isfinite(v[-1]) for v in hist.history.values())
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(images, verbose=0),
                               model.predict(images, verbose=0), atol=1e-5)


def _locals(views, i):
    v = views[:, i]
    return ops.reshape(v, (v.shape[0], -1, v.shape[-1]))


def test_augmented_pairs_score_each_R_against_the_other_augmentation(tiny_config, images):
    # Unclipped scores: the default soft clip (about +-2.69 at a batch of 4) would saturate
    # the spread-out scores below, and with every score at the clip each estimate is
    # exactly 0, cross- and same-view alike (one critic's estimate was exactly 0 in 8 of
    # 400 seeded initializations, and CI met the failure once).
    model = make(tiny_config, augmented_pairs=True, infomin_weight=0.0, critic="infonce",
                 score_clip=None)
    model.compile(**optimizers())
    x1, x2 = images[:4], images[4:]  # different images stand in for two augmentations
    # Larger critic weights spread the scores, so cross- and same-view estimates differ
    # clearly whatever the random initialization.
    for critic in infomax_critics(model):
        for v in critic.trainable_variables:
            v.assign(v * 4.0)
    logs = model.evaluate(tf.data.Dataset.from_tensors((x1, x2)), verbose=0,
                          return_dict=True)
    views = model.backbone.encoder(np.concatenate([x1, x2]), training=False)
    r = model.backbone.aggregator(views, training=False)
    for i, critic in enumerate(infomax_critics(model)):
        cross = (critic([r[:4], _locals(views[4:], i)], training=False)
                 + critic([r[4:], _locals(views[:4], i)], training=False)) / 2
        same = (critic([r[:4], _locals(views[:4], i)], training=False)
                + critic([r[4:], _locals(views[4:], i)], training=False)) / 2
        assert logs[f"mi_R_V{i + 1}"] == pytest.approx(float(cross), rel=1e-4, abs=1e-5)
        # The logged estimate is the cross-view one, not the same-view one (their gap
        # depends on the backend's random initialization, so compare, not threshold).
        assert abs(float(cross) - float(same)) > 1e-6
        assert abs(logs[f"mi_R_V{i + 1}"] - float(cross)) < abs(
            logs[f"mi_R_V{i + 1}"] - float(same))

    # Two identical augmentations give the single-image model's estimate (same weights).
    plain = make(tiny_config, infomin_weight=0.0, critic="infonce", score_clip=None)
    plain.compile(**optimizers())
    plain.set_weights(model.get_weights())
    same_logs = model.evaluate(tf.data.Dataset.from_tensors((x1, x1)), verbose=0,
                               return_dict=True)
    plain_logs = plain.evaluate(x1, batch_size=4, verbose=0, return_dict=True)
    for key in ("mi_R_V1", "mi_R_V2", "objective"):
        # Batches of 8 and 4 may take different float paths through the convolutions.
        assert same_logs[key] == pytest.approx(plain_logs[key], rel=1e-4, abs=1e-4)


def test_augmented_pairs_fit_predict_roundtrip_and_errors(tiny_config, images, tmp_path):
    from keras_infobal import datasets

    model = make(tiny_config, augmented_pairs=True, infomin_weight=1.0)
    model.compile(**optimizers())
    ds = datasets.make_dataset(images, batch_size=4, pairs=True, color_jitter=0.5,
                               grayscale=0.2, drop_remainder=True, seed=0)
    before = snapshot(model.backbone.encoder.variables)
    hist = model.fit(ds, epochs=1, verbose=0)
    assert all(np.isfinite(v[-1]) for v in hist.history.values())
    assert "mi_V1_V2" in hist.history
    assert all(changed(before, model.backbone.encoder.trainable_variables))
    # Prediction and features take single images.
    assert model.predict(images, verbose=0).shape == (8, tiny_config["output_dim"])
    path = str(tmp_path / "pairs.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.augmented_pairs
    np.testing.assert_allclose(loaded.predict(images, verbose=0),
                               model.predict(images, verbose=0), atol=1e-5)
    with pytest.raises(ValueError, match=r"augmented_pairs=True.*pair \(x1, x2\)"):
        model.fit(images, batch_size=4, epochs=1, verbose=0)
    # The training function already ran, so these fail when it runs (InvalidArgumentError).
    with pytest.raises(Exception, match="at least 2 images per batch"):
        model.fit(tf.data.Dataset.from_tensors((images[:1], images[1:2])), epochs=1,
                  verbose=0)
    with pytest.raises(Exception, match="same batch size"):
        model.fit(tf.data.Dataset.from_tensors((images[:4], images[4:6])), epochs=1,
                  verbose=0)
    fresh = make(tiny_config, augmented_pairs=True, infomin_weight=0.0)
    fresh.compile(**optimizers())
    with pytest.raises(ValueError, match="same batch size; got 4 and 2"):
        fresh.fit(tf.data.Dataset.from_tensors((images[:4], images[4:6])), epochs=1,
                  verbose=0)


@pytest.mark.bf16
def test_mixed_bfloat16_policy_trains_with_float32_estimates(tiny_config, images):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = make(tiny_config, infomin_weight=1.0, critic="infonce")
        model.compile(**optimizers())
        assert model.backbone.encoder.compute_dtype == "bfloat16"
        assert all(v.dtype == "float32" for v in model.trainable_variables)
        hist = model.fit(images, batch_size=4, epochs=2, verbose=0)
        assert all(np.isfinite(v[-1]) for v in hist.history.values())
        x = ops.convert_to_tensor(images)
        views = model.backbone.encoder(x, training=False)
        r = model.backbone.aggregator(views, training=False)
        critic = infomax_critics(model)[0]
        mi = critic([r, _locals(views, 0)], training=False)
        assert keras.backend.standardize_dtype(mi.dtype) == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    # The same weights in float32 give nearly the same estimate (bfloat16 activations).
    full = make(tiny_config, infomin_weight=1.0, critic="infonce")
    full.set_weights(model.get_weights())
    views32 = full.backbone.encoder(x, training=False)
    mi32 = infomax_critics(full)[0]([full.backbone.aggregator(views32, training=False),
                                     _locals(views32, 0)], training=False)
    assert float(mi) == pytest.approx(float(mi32), abs=0.05)


def test_train_on_batch_takes_a_pair_as_x_and_y(tiny_config, images):
    """`train_on_batch(x1, x2)` is one step on the pair (x1, x2), the same as `fit` on it."""
    x1, x2 = images[:4], images[4:]
    weights = []
    for use_fit in (False, True):
        keras.utils.set_random_seed(0)
        model = make(tiny_config, augmented_pairs=True, infomin_weight=0.0, critic="infonce")
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        if use_fit:
            model.fit(tf.data.Dataset.from_tensors((x1, x2)), epochs=1, verbose=0)
        else:
            model.train_on_batch(x1, x2)
        weights.append([np.asarray(v) for v in model.backbone.encoder.trainable_variables])
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, atol=1e-5)
    keras.utils.set_random_seed(0)
    swapped = make(tiny_config, augmented_pairs=True, infomin_weight=0.0, critic="infonce")
    swapped.compile(optimizer=keras.optimizers.SGD(0.1))
    swapped.train_on_batch(x1, x1)  # another pair: another step
    assert any(not np.allclose(a, np.asarray(b), atol=1e-5)
               for a, b in zip(weights[0], swapped.backbone.encoder.trainable_variables))


def test_a_single_image_model_refuses_pair_batches(tiny_config, images):
    from keras_infobal import datasets

    model = make(tiny_config, infomin_weight=0.0)
    model.compile(optimizer="adam")
    pairs = datasets.make_dataset(images, batch_size=4, pairs=True, drop_remainder=True)
    for call in (lambda: model.fit(pairs, epochs=1, verbose=0),
                 lambda: model.evaluate(pairs, verbose=0),
                 lambda: model.train_on_batch(images[:4], images[4:])):
        with pytest.raises(ValueError, match=r"takes single images.*augmented_pairs=True"):
            call()
    # Labels are not a second image batch: a (images, labels) dataset still trains.
    labelled = tf.data.Dataset.from_tensor_slices((images, np.arange(8))).batch(4)
    model.fit(labelled, epochs=1, verbose=0)
