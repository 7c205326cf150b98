"""Multi-scale InfoMax (`InfoBal(local_scales=...)` / `objectives.InfoMax(local_scales=...)`,
AMDIM's 5x5 / 7x7 beside 8x8): R scored against each view's own locations and against their
s x s average-pooled locations, each scale with its own critic, the view's term the mean
over scales.

References are numpy: the pooling is written out with loops, the critics' scores and the
InfoNCE estimate come from `helpers.ref_critic_scores` / `ref_infonce` (the critics'
weights, not their calls)."""

import keras
import numpy as np
import pytest

from helpers import (infomax_critics, optimizers, ref_critic_scores, ref_infonce,
                     scale_critics, tiny)
from keras_infobal import InfoBal
from keras_infobal.objectives.dim import check_local_scales

SHAPE = (32, 32, 3)  # TINY's trunk: an 8x8 map, two 4x8 row views


def make(**kwargs):
    base = dict(critic="infonce", infomin_weight=0.0, score_clip=20.0, image_shape=SHAPE,
                local_scales=(1, 2, 4), view_weights=[1.0, 0.5])
    return tiny(**{**base, **kwargs})


def objective(model, views):
    """(J, the InfoMax terms by view) as `encoder_loss` logs them."""
    _, logs = model.encoder_loss(views, training=False)
    return logs["objective"], [logs[f"mi_R_V{i + 1}"] for i in range(model.num_views)]


def pool_by_loops(view, size):
    """(B, h - s + 1, w - s + 1, C): the mean of every s x s window inside one view."""
    b, h, w, c = view.shape
    out = np.zeros((b, h - size + 1, w - size + 1, c))
    for y in range(h - size + 1):
        for x in range(w - size + 1):
            out[:, y, x] = view[:, y:y + size, x:x + size].mean(axis=(1, 2))
    return out


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, size=(8,) + SHAPE, dtype=np.uint8)


def test_each_view_term_is_the_mean_of_its_scales_by_hand(images):
    model = make()
    assert [c.name for c in model.objectives[0].critics] == [
        "infomax_critic_1", "infomax_critic_2",
        "infomax_critic_1_pool2", "infomax_critic_1_pool4",
        "infomax_critic_2_pool2", "infomax_critic_2_pool4"]
    assert [c.name for c in scale_critics(model)] == [
        "infomax_critic_1_pool2", "infomax_critic_1_pool4",
        "infomax_critic_2_pool2", "infomax_critic_2_pool4"]
    for critic in model.objectives[0].critics:  # scores of clearly
        for v in critic.trainable_variables:    # different sizes per critic
            v.assign(v * 3.0)
    views = model.backbone.encoder(images, training=False)
    v = np.asarray(views, dtype="float64")
    r = np.asarray(model.backbone.aggregator(views, training=False), dtype="float64")
    assert v.shape[1:] == (2, 4, 8, 16)
    expected, per_scale = [], []
    for i in range(2):
        terms = [ref_infonce(ref_critic_scores(infomax_critics(model)[i], r,
                                               v[:, i].reshape(8, 32, 16)))]
        for k, size in enumerate((2, 4)):
            pooled = pool_by_loops(v[:, i], size)
            assert pooled.shape[1:3] == (5 - size, 9 - size)  # 3x7 and 1x5 inside a view
            terms.append(ref_infonce(ref_critic_scores(
                scale_critics(model)[2 * i + k], r, pooled.reshape(8, -1, 16))))
        per_scale.append(terms)
        expected.append(sum(terms) / 3.0)
    assert len({round(t, 3) for terms in per_scale for t in terms}) == 6  # a swap would show
    j, infomax = objective(model, views)
    np.testing.assert_allclose([float(t) for t in infomax], expected, rtol=2e-4, atol=2e-4)
    assert float(j) == pytest.approx(expected[0] + 0.5 * expected[1], rel=2e-4, abs=2e-4)


def test_the_default_scores_the_views_own_locations_only(images):
    model = make(local_scales=(1,))
    assert scale_critics(model) == []
    assert [c.name for c in model.objectives[0].critics] == [
        "infomax_critic_1", "infomax_critic_2"]
    views = model.backbone.encoder(images, training=False)
    v = np.asarray(views, dtype="float64")
    r = np.asarray(model.backbone.aggregator(views, training=False), dtype="float64")
    _, infomax = objective(model, views)
    ref = ref_infonce(ref_critic_scores(infomax_critics(model)[0], r, v[:, 0].reshape(8, 32, 16)))
    assert float(infomax[0]) == pytest.approx(ref, rel=2e-4, abs=2e-4)


@pytest.mark.parametrize("bad", [(), (0, 1), (2, 4), (1, 1), (1, 2.0), (1, True), "1", 3])
def test_bad_local_scales_say_what_is_expected(bad):
    from keras_infobal.objectives import InfoMax

    message = r"`local_scales` must be distinct positive integer pooling sizes that include 1"
    for build in (lambda: make(local_scales=bad), lambda: InfoMax(local_scales=bad),
                  lambda: check_local_scales(bad)):
        with pytest.raises(ValueError, match=message):
            build()


def test_local_scales_are_sorted_and_distinct():
    assert check_local_scales([4, 1, 2]) == (1, 2, 4)
    assert make(local_scales=[4, 1, 2]).objectives[0].local_scales == (1, 2, 4)


def test_a_scale_larger_than_the_views_is_refused_at_build():
    message = r"pooling sizes \[5\] exceed the views' 4x8 locations; use sizes up to 4"
    with pytest.raises(ValueError, match=message):
        make(local_scales=(1, 5))  # built at construction: its image size is known
    lazy = make(local_scales=(1, 5), image_shape=None)  # the size comes with the data
    with pytest.raises(ValueError, match=message):
        lazy.build((None,) + SHAPE)


def test_critic_instances_cannot_be_given_scales():
    from keras_infobal import JSDCritic

    with pytest.raises(ValueError, match="need a named `critic`"):
        make(critic=JSDCritic(units=16), local_scales=(1, 2))


@pytest.mark.backend
def test_fit_trains_the_scale_critics_and_the_keras_file_keeps_them(images, tmp_path):
    model = make(local_scales=(1, 2))
    model.compile(**optimizers())
    assert len(scale_critics(model)) == 2
    assert all(any(v is w for w in model.encoder_variables)
               for c in scale_critics(model) for v in c.trainable_variables)
    before = [np.asarray(v) for c in scale_critics(model) for v in c.trainable_variables]
    model.fit(images, batch_size=4, epochs=1, verbose=0)
    after = [np.asarray(v) for c in scale_critics(model) for v in c.trainable_variables]
    assert all(not np.allclose(a, b) for a, b in zip(before, after))
    path = str(tmp_path / "scales.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.objectives[0].local_scales == (1, 2)
    for a, b in zip(scale_critics(model), scale_critics(loaded), strict=True):
        for x, y in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose(loaded.evaluate(images, batch_size=8, verbose=0),
                               model.evaluate(images, batch_size=8, verbose=0),
                               rtol=1e-5, atol=1e-5)


def test_presets_keep_the_scales_and_their_critics(images, tmp_path):
    import json

    model = make(local_scales=(1, 2))
    model.save_to_preset(str(tmp_path / "p"))
    # The scales are the objective's (task.json), not the backbone's architecture.
    with open(tmp_path / "p" / "task.json") as f:
        assert json.load(f)["local_scales"] == [1, 2]
    with open(tmp_path / "p" / "config.json") as f:
        assert "local_scales" not in json.load(f)["config"]
    assert model.objective_config()["local_scales"] == [1, 2]
    loaded = InfoBal.from_preset(str(tmp_path / "p"))
    assert loaded.objectives[0].local_scales == (1, 2)
    assert [c.name for c in loaded.objectives[0].critics] == [
        c.name for c in model.objectives[0].critics]
    for a, b in zip(model.objectives[0].critics, loaded.objectives[0].critics, strict=True):
        for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
            np.testing.assert_array_equal(x, y)


def test_a_preset_continues_at_more_scales_keeping_its_weights_and_critics(images, tmp_path):
    """`local_scales` is an objective override of `from_preset`: the backbone's weights and
    the shipped critics load, the critics of the new scale start fresh, with a warning."""
    from keras_infobal import InfoBalBackbone

    model = make(local_scales=(1, 2))
    model.save_to_preset(str(tmp_path / "p"))
    with pytest.warns(UserWarning, match=r"the critics \['infomax_critic_1_pool4', "
                                         r"'infomax_critic_2_pool4'\] start from a random "
                                         r"initialization"):
        wider = InfoBal.from_preset(str(tmp_path / "p"), local_scales=[1, 2, 4])
    assert wider.objectives[0].local_scales == (1, 2, 4)
    for x, y in zip(model.backbone.get_weights(), wider.backbone.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)
    kept = {c.name: c for c in model.objectives[0].critics}
    for critic in wider.objectives[0].critics:
        if critic.name in kept:
            for x, y in zip(kept[critic.name].get_weights(), critic.get_weights(), strict=True):
                np.testing.assert_array_equal(x, y)
    assert sorted(c.name for c in scale_critics(wider) if c.name not in kept) == [
        "infomax_critic_1_pool4", "infomax_critic_2_pool4"]
    # The backbone takes no scales any more; its other overrides are checked as before.
    with pytest.raises(ValueError, match=r"constructor arguments.*got \['local_scales'\]"):
        InfoBalBackbone.from_preset(str(tmp_path / "p"), local_scales=(1,))
    with pytest.raises(ValueError, match=r"constructor arguments.*got \['scales'\]"):
        InfoBalBackbone.from_preset(str(tmp_path / "p"), scales=(1, 2))
    with pytest.raises(ValueError, match="same configuration"):
        InfoBalBackbone.from_preset(str(tmp_path / "p"), filters=(8, 8))


def test_a_continued_run_takes_the_scales_under_task_and_refuses_backbone_keys():
    """With `init_from`, the architecture is the preset's: the recipe's backbone section does
    not apply and the run's own backbone keys are refused; the scales are an objective
    option, under `task`, for fresh and continued runs alike."""
    from keras_infobal.pretraining import resolve

    fresh = resolve(recipe="dim_pairs", task={"local_scales": [1, 2]})
    assert fresh["backbone"] == {"num_views": 2, "split": "rows"}
    assert fresh["task"]["local_scales"] == [1, 2]
    continued = resolve(recipe="dim_pairs", init_from="dim_pairs",
                        task={"local_scales": [1, 2]})
    assert continued["backbone"] == {} and continued["task"]["local_scales"] == [1, 2]
    assert resolve(recipe="dim_pairs", init_from="dim_pairs")["backbone"] == {}
    with pytest.raises(ValueError, match=r"`backbone` options \['local_scales'\] change the "
                                         r"architecture.*go under `task`"):
        resolve(recipe="dim_pairs", init_from="dim_pairs", backbone={"local_scales": [1, 2]})


def test_backbone_keys_with_a_keras_model_to_continue_from_are_refused(tmp_path):
    from keras_infobal.pretraining import resolve

    model = make(local_scales=(1,))
    path = str(tmp_path / "m.keras")
    model.save(path)
    with pytest.raises(ValueError, match=r"`backbone` options \['filters'\] change the "
                                         r"architecture, but the run continues from `.*m\.keras`"):
        resolve(recipe="dim_pairs", init_from=path, backbone={"filters": [8, 8]})


def test_objective_keys_with_a_keras_model_to_continue_from_are_refused(tmp_path):
    """A .keras model keeps its own objective: the run's own task keys are refused where the
    task builds (the recipe's are not applied), where the old code dropped them silently."""
    from keras_infobal.pretraining import _build_task, resolve

    model = make(local_scales=(1,))
    path = str(tmp_path / "m.keras")
    model.save(path)
    run = resolve(recipe="dim_pairs", init_from=path, mixed_precision=False)
    assert run["task"] == {}
    assert _build_task(run, (16, 16, 3)).objectives[0].local_scales == (1,)
    run = resolve(recipe="dim_pairs", init_from=path, task={"local_scales": [1, 2]},
                  mixed_precision=False)
    with pytest.raises(ValueError, match=r"`task` options \['local_scales'\] change the "
                                         r"objective, but the run continues from `.*m\.keras`"):
        _build_task(run, (16, 16, 3))
