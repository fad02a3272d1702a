"""When a count reaches an "every N" boundary, with one convention for every caller.

A run asks this at two levels: does this micro-batch complete an optimizer step (every
``accumulate_grad_batches`` micro-batches), and is this optimizer step a logged one (every
``log_every_n_steps`` steps)? Both are answered by :func:`is_boundary` over a 1-based count, so
the training monitor, the progress bar and the interrupt handler cannot drift apart by one.
"""


def is_boundary(count: int, every: int) -> bool:
    """Whether the ``count``-th item (1-based) is the last of a group of ``every``.

    Lightning's convention for ``log_every_n_steps``: with ``every=3`` the 3rd, 6th, ... steps
    (0-based indices 2, 5, ...) are boundaries. Callers pass ``batch_idx + 1`` for micro-batches
    and the number of optimizer steps done for steps.

    Args:
        count: How many items have been done, this one included.
        every: Group size; 0 or less means there is no boundary (``log_every_n_steps: 0`` logs
            nothing).
    """
    return every > 0 and count % every == 0
