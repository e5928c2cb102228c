import multiprocessing.forkserver

import pytest
import torch

from zoo.workers import worker_context

# One fork server for the whole session, started now with what the tests' child processes run
# (the local engine's workers, tests/test_crash_safety.py's killed writers): each child is then
# forked in milliseconds instead of importing torch and the tests again.
worker_context(("generators.generate", "tests.test_crash_safety", "tests.test_importers", "sklearn.datasets"))
multiprocessing.forkserver.ensure_running()


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.set_num_threads(2)
    yield
