"""The optimiser every run trains with: Adam, at a constant rate or warm-up plus cosine decay.

>>> from jaxbasics.train.config import RunConfig
>>> sched = learning_rate(RunConfig(lr_schedule="cosine", warmup_steps=10,
...                                 num_training_updates=110, learning_rate=1.0))
>>> [round(float(sched(s)), 3) for s in (0, 5, 10, 60, 110)]
[0.0, 0.5, 1.0, 0.5, 0.0]
"""

from __future__ import annotations

import optax

from jaxbasics.train.config import RunConfig


def learning_rate(config: RunConfig) -> float | optax.Schedule:
    """The learning rate: ``config.learning_rate``, constant, or under ``lr_schedule="cosine"``
    a linear warm-up over ``warmup_steps`` and cosine decay to 0 at the run's last step, as
    PyTorch's ``LinearLR`` then ``CosineAnnealingLR`` (``optax.warmup_cosine_decay_schedule``)."""
    if config.lr_schedule == "constant":
        return config.learning_rate
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=config.warmup_steps,
        decay_steps=max(config.num_training_updates, config.warmup_steps + 1),
        end_value=0.0,
    )


def make_optimizer(config: RunConfig) -> optax.GradientTransformation:
    """Adam, as in the notes (``torch.optim.Adam(model.parameters(), lr=learning_rate)``).

    PyTorch's defaults (betas 0.9/0.999, eps 1e-8, no amsgrad) are optax's. A schedule
    adds its step count to the optimiser state, so a resumed run continues it exactly.

    >>> import jax.numpy as jnp
    >>> int(make_optimizer(RunConfig()).init({"w": jnp.zeros(2)})[0].count)
    0
    """
    return optax.adam(learning_rate(config))
