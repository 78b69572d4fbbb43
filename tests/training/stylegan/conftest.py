"""StyleGAN tests run single-threaded: tiny networks gain nothing from threads, and on the shared 2-core
machines oversubscribed threads make them many times slower."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
