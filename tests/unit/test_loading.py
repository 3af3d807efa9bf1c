"""cpu_threads: the torch thread count a CPU model runs with, set around each call and restored after."""

from __future__ import annotations

import pytest
import torch

from engines.loading import cpu_threads

pytestmark = pytest.mark.unit


@pytest.fixture
def one_thread():
    # As in a Ray replica with a fraction of a CPU (OMP_NUM_THREADS=1).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_count_holds_inside_the_block_and_is_restored_after(one_thread) -> None:
    with cpu_threads(2, torch.device("cpu")):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1


def test_it_is_restored_when_the_call_fails(one_thread) -> None:
    with pytest.raises(RuntimeError), cpu_threads(2, torch.device("cpu")):
        raise RuntimeError("the pipeline failed")
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize(("count", "device"), [(None, "cpu"), (2, "cuda"), (2, None)])
def test_no_count_or_no_cpu_leaves_the_threads_alone(one_thread, count, device) -> None:
    with cpu_threads(count, torch.device(device) if device else None):
        assert torch.get_num_threads() == 1
