"""``is_boundary``: the one "every N" convention, against hand-written boundaries."""

import pytest

from llm_torch.engine.steps import is_boundary


@pytest.mark.parametrize(
    ("every", "boundaries"),
    [
        (3, [3, 6, 9]),  # log_every_n_steps=3: the 3rd, 6th and 9th steps (0-based 2, 5, 8)
        (1, [1, 2, 3, 4, 5, 6, 7, 8, 9]),  # every step; no accumulation: every micro-batch
        (4, [4, 8]),  # accumulate_grad_batches=4: micro-batches 3 and 7 (0-based) end a step
        (10, []),  # never within the first nine
        (0, []),  # log_every_n_steps=0 logs nothing
    ],
)
def test_boundaries_of_the_first_nine_counts(every: int, boundaries: list[int]) -> None:
    assert [count for count in range(1, 10) if is_boundary(count, every)] == boundaries
