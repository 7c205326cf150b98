"""Writes the per-pair-layout fixtures that tests/test_pair_critics.py loads.

They were saved by keras-infobal before the batched InfoMin critics (one critic layer per
view pair, `infomin_critics` a list). Regenerate only from a checkout of that older code:

    git archive 5abfc19 keras_infobal | tar -x -C /tmp/legacy_src
    PYTHONPATH=/tmp/legacy_src python tests/data/make_legacy_fixtures.py
"""

import os

import keras
import numpy as np

from keras_infobal import InfoBal

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = dict(filters=(8, 16), conv_filters=16, fc_units=32, output_dim=8, critic_units=16,
            input_shape=(16, 16, 3))
CASES = {
    # name: (config, file kind)
    "legacy_jsd_m4": (dict(num_views=4, critic="jsd", infomin_weight=1.0), "weights"),
    "legacy_club_m4": (dict(num_views=4, critic="jsd", infomin_critic="club",
                            infomin_weight=0.5), "keras"),
    "legacy_infonce_m2": (dict(num_views=2, critic="infonce", score_clip=5.0,
                               infomin_weight=1.0), "keras"),
    "legacy_club_sampled_m2": (dict(num_views=2, infomin_critic="club_sampled",
                                    infomin_weight=1.0), "weights"),
}


def _record(expected, name, model, images):
    pooled = model._pool(model.encoder(images, training=False))
    fits, terms = zip(*model._infomin_fit_terms(pooled, training=False))
    expected[name + "/fits"] = np.array([float(f) for f in fits])
    expected[name + "/terms"] = np.array([float(t) for t in terms])
    expected[name + "/R"] = keras.ops.convert_to_numpy(model(images, training=False))


def main():
    keras.utils.set_random_seed(0)
    images = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3)).astype("uint8")
    expected = {"images": images}
    for name, (cfg, kind) in CASES.items():
        model = InfoBal(**TINY, **cfg)
        if kind == "keras":
            model.compile(optimizer=keras.optimizers.Adam(1e-3),
                          discriminator_optimizer=keras.optimizers.Adam(1e-3))
            model.fit(images, batch_size=6, epochs=1, verbose=0, shuffle=False)
            model.save(os.path.join(HERE, name + ".keras"))
        else:
            model.save_weights(os.path.join(HERE, name + ".weights.h5"))
        _record(expected, name, model, images)
        if kind == "keras":
            # One more step from the saved state: with the optimizers' saved moments.
            model.fit(images, batch_size=6, epochs=1, verbose=0, shuffle=False)
            _record(expected, name + "/after_step", model, images)
    np.savez(os.path.join(HERE, "legacy_expected.npz"), **expected)


if __name__ == "__main__":
    main()
