"""The device/versions blocks every benchmark JSON carries (avatar.commands.bench.machine)."""
import json
import os
import platform

from avatar.commands.bench.machine import device, versions


def test_device_block_describes_this_machine():
    import torch

    d = device()
    assert d["kind"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert d["cores"] == os.cpu_count() and d["torch_threads"] == torch.get_num_threads()
    assert (d["gpu"] is None) == (not torch.cuda.is_available())
    assert d["load_average_1_5_15"] is None or len(d["load_average_1_5_15"]) == 3
    assert device("cpu")["kind"] == "cpu"
    json.dumps(d)                                                          # plain JSON


def test_versions_names_installed_modules_and_marks_missing_ones():
    import numpy
    import torch

    v = versions("json", "no_such_module_xyz")
    assert v["python"] == platform.python_version()
    assert v["torch"] == torch.__version__ and v["numpy"] == numpy.__version__
    assert v["no_such_module_xyz"] is None and "json" in v
