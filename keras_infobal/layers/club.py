"""CLUB: a contrastive log-ratio upper bound on mutual information.

Cheng, Hao, Dai, Liu, Gan, Carin. "CLUB: A Contrastive Log-ratio Upper Bound of Mutual
Information", ICML 2020. A variational network q(y | x) (here a diagonal Gaussian with mean
and log-variance heads) is fitted by maximum likelihood on paired samples; with q fixed,

    I_CLUB = mean_a log q(y_a | x_a) - mean_{a,b} log q(y_b | x_a)

is an upper bound on I(X; Y) when q is close to p(y | x). Minimizing it is InfoBal's
"other way" to optimize the InfoMin term: minimize an upper bound instead of a lower bound
estimated by an adversarial discriminator.
"""

import math

import keras
from keras import ops

PACKAGE = "keras_infobal"
_LOG_2PI = math.log(2.0 * math.pi)


def _q_outputs(mu, logvar, y, partners=None):
    """q's outputs and the samples as float32 (B, P, D) tensors (a rank-2 input gets P = 1),
    the partners as (P, B), and whether the pair axis was added; a ValueError says what is
    wrong."""
    mu, logvar, y = (ops.cast(t, "float32") for t in (mu, logvar, y))
    rank = len(y.shape)
    if rank not in (2, 3) or len(mu.shape) != rank or len(logvar.shape) != rank:
        raise ValueError(
            "CLUB's mu, logvar and y must all be (B, D), or all (B, P, D) for P view pairs; "
            f"got shapes {tuple(mu.shape)}, {tuple(logvar.shape)} and {tuple(y.shape)}."
        )
    if partners is not None:
        partners = ops.convert_to_tensor(partners)
        if len(partners.shape) != rank - 1:
            raise ValueError(
                f"`partners` must be (B,) for (B, D) samples and (P, B) for (B, P, D) ones; "
                f"got shape {tuple(partners.shape)} for samples {tuple(y.shape)}."
            )
    if rank == 3:
        return mu, logvar, y, partners, False
    mu, logvar, y = (ops.expand_dims(t, 1) for t in (mu, logvar, y))
    return mu, logvar, y, None if partners is None else partners[None], True


def _unpair(value, added):
    return value[0] if added else value


def gaussian_log_likelihood(mu, logvar, y):
    """Mean over the batch of `log N(y; mu, diag(exp(logvar)))` (summed over features).

    `mu`, `logvar`, `y` of shape (B, D) give a scalar; of shape (B, P, D) (one Gaussian per
    view pair, as `PairCLUB` has) the (P,) log-likelihoods, pair p's being that of `[:, p]`.
    """
    mu, logvar, y, _, added = _q_outputs(mu, logvar, y)
    per_dim = -0.5 * (ops.square(y - mu) * ops.exp(-logvar) + logvar + _LOG_2PI)
    return _unpair(ops.mean(ops.sum(per_dim, axis=-1), axis=0), added)


def club_estimate(mu, logvar, y, partners=None):
    """The CLUB estimate from q's outputs `mu`, `logvar` (B, D) at x and the samples y (B, D).

    With `partners=None` every y_b is a negative of every anchor a (O(B D) via the moments
    of y: `mean_b (y_b - mu_a)^2 = mean_b y_b^2 - 2 mu_a mean_b y_b + mu_a^2`). With
    `partners` (B,) integer indices, anchor a has the single negative y[partners[a]]
    (CLUB's sampled variant, an unbiased estimate of the same quantity).

    With (B, P, D) inputs, one q per view pair, it returns the (P,) estimates, pair p's
    being the estimate on `[:, p]`; `partners` are then (P, B), a row per pair.

    ```python
    mu, logvar = q(x)
    club_estimate(mu, logvar, y)   # nats, >= I(X;Y) when q fits p(y|x)
    ```
    """
    mu, logvar, y, partners, added = _q_outputs(mu, logvar, y, partners)
    inv_var = ops.exp(-logvar)
    positive = -0.5 * ops.square(y - mu) * inv_var  # (B, P, D)
    if partners is None:
        y_mean = ops.mean(y, axis=0, keepdims=True)
        y_sq_mean = ops.mean(ops.square(y), axis=0, keepdims=True)
        spread = y_sq_mean - 2.0 * mu * y_mean + ops.square(mu)
    else:
        # Anchor a of pair p is scored against y[partners[p, a], p].
        index = ops.broadcast_to(ops.transpose(partners)[..., None], ops.shape(y))
        spread = ops.square(ops.take_along_axis(y, index, axis=0) - mu)
    negative = -0.5 * spread * inv_var
    return _unpair(ops.mean(ops.sum(positive - negative, axis=-1), axis=0), added)


# mutmut mutates only the functions above: its trampolines break Keras layer methods, so the
# layer is mutated by cosmic-ray instead (dev/mutation.sh).
@keras.saving.register_keras_serializable(package=PACKAGE)
class CLUB(keras.layers.Layer):  # pragma: no mutate block
    """CLUB upper bound on I(X; Y) with a diagonal-Gaussian q(y | x).

    Calling it on `[x, y]` (both (B, D_x), (B, D_y)) returns the CLUB estimate (what an
    InfoMin encoder minimizes, with q fixed); `log_likelihood([x, y])` is what q's own
    update maximizes. `sampled=True` scores each anchor against one random partner
    (O(B), CLUB's sampled variant) instead of the whole batch.

    Args:
        units: hidden width of q's mean and log-variance heads.
        sampled: one random negative per anchor instead of all B.
        seed: seed of the partner permutation (sampled variant).

    Example:

    ```python
    club = CLUB(units=256)
    # fit q:  maximize club.log_likelihood([x, y]) over club.trainable_variables
    upper = club([x, y])        # >= I(X; Y) once q fits
    ```
    """

    def __init__(self, units=512, sampled=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(units, int) or units < 1:
            raise ValueError(f"`units` must be a positive integer; got {units!r}.")
        self.units = units
        self.sampled = bool(sampled)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if self.sampled else None

    def build(self, input_shape):
        x_shape, y_shape = (tuple(s) for s in input_shape)
        if len(x_shape) != 2 or len(y_shape) != 2:
            raise ValueError(
                "CLUB takes [x, y] of shapes (B, D_x) and (B, D_y); got "
                f"{x_shape} and {y_shape}."
            )
        self.x_dim, self.y_dim = x_shape[-1], y_shape[-1]
        # CLUB's heads: Linear -> ReLU -> Linear, the log-variance squashed by tanh.
        self.mu_hidden = keras.layers.Dense(self.units, activation="relu", name="mu_hidden")
        self.mu_out = keras.layers.Dense(self.y_dim, name="mu")
        self.logvar_hidden = keras.layers.Dense(self.units, activation="relu",
                                                name="logvar_hidden")
        self.logvar_out = keras.layers.Dense(self.y_dim, activation="tanh", name="logvar")
        for hidden, out in ((self.mu_hidden, self.mu_out),
                            (self.logvar_hidden, self.logvar_out)):
            hidden.build((None, self.x_dim))
            out.build((None, self.units))

    def _check(self, inputs):
        if not (isinstance(inputs, (list, tuple)) and len(inputs) == 2):
            raise ValueError("CLUB takes a pair [x, y] of (B, D) tensors.")
        x, y = inputs
        if not self.built:
            self.build([x.shape, y.shape])
        if len(x.shape) != 2 or len(y.shape) != 2:
            raise ValueError(
                f"CLUB takes [x, y] of shapes (B, D_x) and (B, D_y); got {tuple(x.shape)} and "
                f"{tuple(y.shape)}."
            )
        if x.shape[-1] != self.x_dim or y.shape[-1] != self.y_dim:
            raise ValueError(
                f"This CLUB was built for x of width {self.x_dim} and y of width {self.y_dim}; "
                f"got {x.shape[-1]} and {y.shape[-1]}. Use a new CLUB for other widths."
            )
        if x.shape[0] is not None and y.shape[0] is not None and x.shape[0] != y.shape[0]:
            raise ValueError(
                f"x and y must share the batch size; got {x.shape[0]} and {y.shape[0]}."
            )
        return x, y

    def mu_logvar(self, x):
        """q's mean and log-variance of y given x, in float32."""
        mu = self.mu_out(self.mu_hidden(x))
        logvar = self.logvar_out(self.logvar_hidden(x))
        return ops.cast(mu, "float32"), ops.cast(logvar, "float32")

    def log_likelihood(self, inputs):
        """Mean log q(y_a | x_a): what fitting q maximizes."""
        x, y = self._check(inputs)
        mu, logvar = self.mu_logvar(x)
        return gaussian_log_likelihood(mu, logvar, y)

    def _partners(self, batch):
        if not self.sampled:
            return None
        return keras.random.shuffle(ops.arange(batch), seed=self.seed_generator)

    def fit_and_estimate(self, inputs, training=None, gather_fn=None):
        """(log-likelihood, CLUB estimate) from one pass of q: the InfoMin step's outputs."""
        x, y = self._check(inputs)
        self._no_gather(gather_fn)
        mu, logvar = self.mu_logvar(x)
        return (gaussian_log_likelihood(mu, logvar, y),
                club_estimate(mu, logvar, y, self._partners(ops.shape(x)[0])))

    @staticmethod
    def _no_gather(gather_fn):
        if gather_fn is not None:
            raise ValueError(
                "CLUB takes its negatives from the replica's own batch: it does not support "
                "cross_replica_negatives=True. Use a lower-bound InfoMin critic (e.g. "
                "infomin_critic='infonce') with cross-replica negatives, or turn them off."
            )

    def call(self, inputs, training=None, gather_fn=None):
        x, y = self._check(inputs)
        self._no_gather(gather_fn)
        mu, logvar = self.mu_logvar(x)
        return club_estimate(mu, logvar, y, self._partners(ops.shape(x)[0]))

    def compute_output_shape(self, input_shape):
        return ()

    def get_config(self):
        return {**super().get_config(), "units": self.units, "sampled": self.sampled,
                "seed": self.seed}
