import sys
from pathlib import Path

import pytest

# worker processes are spawned and inherit sys.path: they find example_analyzers here
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(params=["inline", "threads", "processes"])
def executor_kind(request):
    return request.param
