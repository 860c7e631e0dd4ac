"""A seeded step of deploykit (a from-scratch init, a training run) never reseeds its caller's process."""

import torch

from deploykit.training.seeding import seeded


def test_a_seeded_block_is_repeatable_and_leaves_the_callers_generator_as_it_was():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with seeded(0):
        inside = torch.rand(3)
    assert torch.equal(torch.rand(3), expected)  # as if the block had never run
    with seeded(0):
        assert torch.equal(torch.rand(3), inside)


def test_an_unseeded_block_still_restores_the_generator():
    torch.manual_seed(7)
    expected = torch.rand(2)
    torch.manual_seed(7)
    with seeded(None):
        torch.manual_seed(99)  # what a resumed training run does: set the state it saved
        torch.rand(5)
    assert torch.equal(torch.rand(2), expected)
