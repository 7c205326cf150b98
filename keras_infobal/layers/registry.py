"""The one table of critic names, and the functions that build a critic from a name.

A name is either a lower bound, estimated by a critic that is trained to maximize it (an
estimator of `keras_infobal.estimators`: "jsd", "dv", "infonce", "nwj", or one added with
`estimators.register_estimator`), or an upper bound, CLUB ("club", or "club_sampled" for one
random negative per anchor), whose variational q is fitted by maximum likelihood.

`critic_names()` are the InfoMax critics' choices (lower bounds only); `infomin_critic_names()`
the InfoMin term's (both kinds). Each name builds one layer per view pair
(`get_critic`, `get_infomin_critic`: `MICritic` and its subclasses, `CLUB`) or, for the
InfoMin term, one layer for all pairs (`get_pair_critics`: `PairCritics`, `PairCLUB`).

This module imports the critic layers; none of them imports it.

```python
from keras_infobal.layers import registry
registry.infomin_critic_names()   # ('dv', 'infonce', 'jsd', 'nwj', 'club', 'club_sampled')
critics = registry.get_pair_critics("club", pairs=[(0, 1), (0, 2), (1, 2)], units=128)
```
"""

from keras_infobal import estimators
from keras_infobal.layers.club import CLUB
from keras_infobal.layers.critics import DVCritic, InfoNCECritic, JSDCritic, MICritic, NWJCritic
from keras_infobal.layers.pair_critics import PairCLUB, PairCritics

# name -> the per-pair layer class and its fixed options. Lower bounds name the critic
# class of their estimator (an estimator registered later gets `MICritic(estimator=name)`);
# upper bounds name CLUB's options. The batched layer of a name is `PairCritics` for every
# lower bound and `PairCLUB` (same options) for every upper bound.
CRITICS = {
    "jsd": (JSDCritic, {}),
    "dv": (DVCritic, {}),
    "infonce": (InfoNCECritic, {}),
    "nwj": (NWJCritic, {}),
    "club": (CLUB, {"sampled": False}),
    "club_sampled": (CLUB, {"sampled": True}),
}

# The upper bounds' options, by name: {"club": {"sampled": False}, "club_sampled": {...}}.
UPPER_BOUNDS = {name: options for name, (cls, options) in CRITICS.items() if cls is CLUB}


def _key(name):
    return str(name).lower()


def is_upper_bound(name):
    """Whether `name` is a CLUB upper bound (fitted by likelihood, not adversarially)."""
    return _key(name) in UPPER_BOUNDS


def critic_names():
    """Every estimator a (lower-bound) critic can use: the built-ins and those added with
    `estimators.register_estimator`, sorted."""
    built_in = {name for name in CRITICS if not is_upper_bound(name)}
    return tuple(sorted(built_in | set(estimators.ESTIMATORS)))


def infomin_critic_names():
    """The InfoMin estimators: lower-bound critics (adversarial) and the CLUB upper bounds."""
    return critic_names() + tuple(UPPER_BOUNDS)


def _unknown(estimator, names, what="critic"):
    return ValueError(f"Unknown {what} {estimator!r}; expected one of {list(names)}.")


def get_critic(estimator, **kwargs):
    """A critic for an estimator name ('jsd', 'dv', 'infonce', 'nwj', or a registered one);
    `kwargs` go to its `MICritic` (sub)class."""
    key = _key(estimator)
    if key in CRITICS and not is_upper_bound(key):
        return CRITICS[key][0](**kwargs)
    if key in estimators.ESTIMATORS:
        return MICritic(estimator=key, **kwargs)
    raise _unknown(estimator, critic_names())


def get_infomin_critic(estimator, units=512, score_clip=None, name=None):
    """The InfoMin term's estimator for one view pair: a critic of `critic_names()` or a CLUB.

    `InfoBal` holds all pairs' estimators in one batched layer (`get_pair_critics`); pair
    p's slice of it computes what this layer computes, which makes this layer the batched
    one's test reference.
    """
    key = _key(estimator)
    if is_upper_bound(key):
        cls, options = CRITICS[key]
        return cls(units=units, name=name, **options)
    if key not in critic_names():
        raise _unknown(estimator, infomin_critic_names(), "InfoMin critic")
    # LayerNorm, not BatchNorm, in the discriminators: they then hold no running state,
    # so the encoder step cannot change them by merely calling them.
    return get_critic(key, units=units, normalization="layer", score_clip=score_clip,
                      name=name)


def get_pair_critics(estimator, pairs, units=512, score_clip=None, name=None):
    """The InfoMin discriminators of all view `pairs` as one batched layer
    (`PairCritics` or `PairCLUB`): pair p's slice is what
    `get_infomin_critic(estimator, units, score_clip)` builds for that pair."""
    key = _key(estimator)
    if is_upper_bound(key):
        return PairCLUB(pairs, units=units, name=name, **UPPER_BOUNDS[key])
    if key not in critic_names():
        raise _unknown(estimator, infomin_critic_names(), "InfoMin critic")
    return PairCritics(pairs, units=units, estimator=key, score_clip=score_clip, name=name)
