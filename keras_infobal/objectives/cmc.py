"""CMC: maximize I(V_i; V_j) between every pair of views, in both directions.

Tian, Krishnan, Isola. "Contrastive Multiview Coding", ECCV 2020 (arXiv 1906.05849, 2019).
CMC's "full graph": every pair of views i < j is a contrastive task, and each pair is scored
in both directions (V_i as the anchor against a batch of V_j candidates, and V_j against a
batch of V_i), with InfoNCE by default. Tschannen et al. (ICLR 2020) read it beside DIM and
CPC as one of the parallel ways of maximizing MI between views of an image; InfoBal's InfoMin
term scores the same pairs and minimizes them (InfoMin with a negative weight is CMC on the
InfoMin critics, trained adversarially; this term trains its critics with the encoder, as
CMC does).

The critics are InfoBal's batched pair critics (`layers.PairCritics`, one encode-and-dot
critic with LayerNorm encoders per pair, all pairs in one computation), named
`cmc_critics`. Logs `cmc_V{i}_V{j}` (1-based view numbers) per pair.
"""

import itertools

import keras
from keras import ops

from keras_infobal import estimators
from keras_infobal.estimators import check_score_clip, clip_scores
from keras_infobal.layers import registry
from keras_infobal.objectives.base import PACKAGE, ObjectiveTerm


def pool_views(views, view_pooling):
    """Views (B, M, h, w, C) as the critics' inputs (B, M, D): "mean" over the locations
    (D = C), or "flatten" (D = h w C)."""
    if view_pooling == "mean":
        return ops.mean(views, axis=(2, 3))
    return ops.reshape(views, (ops.shape(views)[0], views.shape[1], -1))


@keras.saving.register_keras_serializable(package=PACKAGE)
class CMC(ObjectiveTerm):
    """Contrastive Multiview Coding's full graph: the views' pairwise MI, maximized.

    For every pair of views i < j a critic scores the pooled views of all images of the
    batch against each other, `s[a, b] = f_i(v_i^a) . g_j(v_j^b)` (same image: positive;
    the batch's other images: negatives). The pair's estimate averages the two directions,

        I_ij = (est(s) + est(s^T)) / 2,

    `est(s)` anchoring each V_i against the batch's V_j candidates and `est(s^T)` each V_j
    against the V_i candidates (CMC's two contrastive losses, L(V_1, V_2) + L(V_2, V_1), up
    to the factor 1/2). For the symmetric estimators (JSD, DV, NWJ: means over all entries)
    both directions are equal; InfoNCE's differ by which axis the logsumexp runs over.

    The term's value is the **mean** over the M(M-1)/2 pairs (so its size does not grow
    with M and `weight` means the same for any number of views); `SIGN` is +1: the encoder
    and the critics maximize `weight * value`. With InfoNCE each pair's estimate is at most
    log B (log N with cross-replica negatives).

    Augmented pairs (`enc.paired`, the batch stacks two augmentations of the same images):
    the whole stacked batch of 2B images is scored as one batch. An image's views are
    positives of each other only within the same augmented image; the other augmentation of
    the same photo is one of the 2B - 1 negatives (CMC's views are the channels of one
    image, not two augmentations of it).

    Cross-replica negatives (`enc.gather_fn`, `InfoBal(cross_replica_negatives=True)` under
    tf.distribute): both directions use the encodings of all replicas. Each pair's V_i and
    V_j encodings are both all-gathered, and each replica scores its own anchors against
    the N gathered candidates in each direction (rectangular (B, N) scores and the
    replica's offset, as `MICritic` does).

    Args:
        critic: the lower-bound estimator, "infonce" (CMC's), "jsd", "dv", "nwj" or one
            added with `estimators.register_estimator`.
        units: width of the critics' encodings.
        view_pooling: "mean" over a view's locations or "flatten" (a view's whole grid as
            one vector).
        score_clip: bounds the scores (None, the default: raw scores; "auto" or a number c
            soft-clips them, see `MICritic`). Raw by default because the pair critics'
            LayerNorm encodings have dot products of the order of `units`: clipped with
            c * tanh(s / c) they saturate, every score becomes +-c and the estimate sticks
            at 0 with no gradient (seen in 1 of 3 seeds on a synthetic task and in the 2-epoch
            CIFAR-10 pilot, applications/cifar10/pilots/README.md; raw scores reached 3.9 of
            log 64 = 4.16 nats in every seed).
        weight: the term's weight in J (default 1).

    ```python
    model = InfoBal(InfoBalBackbone(num_views=4, split="grid"),
                    objectives=[InfoMax("infonce"), CMC(weight=0.5)])   # DIM + CMC
    ```
    """

    CRITIC_KEYS = ("critic", "units", "score_clip", "view_pooling")

    def __init__(self, critic="infonce", units=512, view_pooling="mean", score_clip=None,
                 weight=1.0, **kwargs):
        kwargs.setdefault("name", "cmc")
        super().__init__(weight=weight, **kwargs)
        key = str(critic).lower()
        if key not in registry.critic_names():
            raise ValueError(
                "CMC's `critic` must be a lower-bound estimator, one of "
                f"{list(registry.critic_names())} (or one added with "
                "keras_infobal.estimators.register_estimator); got "
                f"{critic!r}. (CLUB's upper bound cannot be maximized: an encoder raises it "
                "without sharing information.)")
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ValueError(f"CMC's `units` must be a positive integer; got {units!r}.")
        if view_pooling not in ("mean", "flatten"):
            raise ValueError(
                f"CMC's `view_pooling` must be 'mean' or 'flatten'; got {view_pooling!r}.")
        self.critic = key
        self.units = units
        self.view_pooling = view_pooling
        self.score_clip = check_score_clip(score_clip)

    def log_names(self, num_views):
        return [f"cmc_V{i + 1}_V{j + 1}" for i, j in itertools.combinations(range(num_views), 2)]

    def check_views(self, num_views, split):
        if num_views < 2:
            raise ValueError(
                f"CMC scores pairs of views; the backbone has num_views={num_views}. Use a "
                "backbone with at least 2 views, e.g. InfoBalBackbone(num_views=2, "
                "split='rows'), or leave CMC out of `objectives`.")

    def build_term(self, views_shape, global_dim):
        b, m, vh, vw, c = views_shape
        self.check_views(m, None)
        self.pairs = list(itertools.combinations(range(m), 2))
        critics = registry.get_pair_critics(self.critic, self.pairs, units=self.units,
                                            score_clip=self.score_clip,
                                            name=f"{self.name}_critics")
        critics.build((b, m, c if self.view_pooling == "mean" else vh * vw * c))
        self.critics = [critics]

    def pair_scores(self, enc):
        """The two directions' scores, each (P, B, N, 1), and the offset (None, N = B,
        without `gather_fn`): `[p, a, n]` scores image a's view i against candidate n's view
        j (first), and image a's view j against candidate n's view i (second)."""
        critics = self.critics[0]
        pooled = pool_views(enc.views, self.view_pooling)
        if enc.gather_fn is None:
            s, _ = critics.scores(pooled)
            return s, ops.transpose(s, (0, 2, 1, 3)), None
        # Both sides all-gathered: each direction needs the other side's candidates from
        # every replica. The pair encodings as PairCritics.scores computes them.
        x, y = critics._pair_inputs(pooled)
        first = ops.cast(critics._encode(x, "global"), "float32")  # (B, P, U): V_i side
        second = ops.cast(critics._encode(y, "local"), "float32")  # (B, P, U): V_j side
        all_second, offset = enc.gather_fn(second)
        all_first, _ = enc.gather_fn(first)
        forward = ops.einsum("apu,bpu->pab", first, all_second)[..., None]
        backward = ops.einsum("apu,bpu->pab", second, all_first)[..., None]
        return (clip_scores(forward, self.score_clip, candidates_axis=2),
                clip_scores(backward, self.score_clip, candidates_axis=2), offset)

    def pair_estimates(self, enc):
        """(P,) estimates, each the mean of the pair's two directions."""
        forward, backward, offset = self.pair_scores(enc)
        per_pair = estimators.per_pair(self.critic)
        return (per_pair(forward, offset=offset) + per_pair(backward, offset=offset)) / 2.0

    def estimate(self, enc):
        terms = self.pair_estimates(enc)
        logs = {f"cmc_V{i + 1}_V{j + 1}": terms[p] for p, (i, j) in enumerate(self.pairs)}
        return ops.mean(terms), logs

    def get_config(self):
        return {**super().get_config(), "critic": self.critic, "units": self.units,
                "view_pooling": self.view_pooling, "score_clip": self.score_clip}
