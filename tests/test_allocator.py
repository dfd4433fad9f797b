"""audioembed.allocator: freed memory is reused (no page faults again), and users' settings stand."""
import json
import os
import subprocess
import sys

import pytest

from audioembed import allocator

# In a fresh process: optionally keep freed memory, then run a ResNet-50 (random weights) over a
# batch of 16 windows 3 times after a first pass; print what keep_freed_memory said and the
# minor page faults of those 3 passes. Its activations are tens of MB each, freed and allocated
# again layer after layer.
LOOP = """
import json, resource
import torch
from audioembed.allocator import keep_freed_memory
from audioembed.model import AudioResNet, ModelConfig
torch.set_num_threads(1)
line = keep_freed_memory()
net = AudioResNet(ModelConfig()).eval()
x = torch.zeros(16, 96, 64)
with torch.inference_mode():
    net(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        net(x)
print(json.dumps({"line": line, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def run_python(code: str, **env) -> str:
    """``code``'s stdout in a fresh interpreter, with none of the settings that stop
    keep_freed_memory in its environment but those in ``env``."""
    clean = {k: v for k, v in os.environ.items()
             if k not in allocator._USER_SETTINGS and k not in (allocator.OPT_OUT_VARIABLE, "GLIBC_TUNABLES")}
    return subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                          check=True, timeout=120).stdout


def run_loop(code: str = LOOP, **env) -> dict:
    return json.loads(run_python(code, **env))


@pytest.mark.slow  # a subprocess that imports torch and runs a ResNet-50
def test_kept_memory_is_reused_without_page_faults():
    kept = run_loop()
    if kept["line"] is None:
        pytest.skip("not glibc: keep_freed_memory changes nothing here")
    system = run_loop(AUDIOEMBED_MALLOC="system")
    assert system["line"] is None
    # Measured (AMD EPYC, glibc 2.36): ~42,000 page faults with glibc's thresholds, ~2,700 kept.
    assert system["faults"] > 15_000, system
    assert kept["faults"] < system["faults"] / 5, (kept, system)
    assert "mmap threshold 64 MiB" in kept["line"]


@pytest.mark.parametrize("env", [{"MALLOC_TRIM_THRESHOLD_": "131072"}, {"MALLOC_MMAP_THRESHOLD_": "65536"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"},
                                 {"AUDIOEMBED_MALLOC": "system"}])
def test_users_settings_stand(env):
    code = ("import json; from audioembed.allocator import keep_freed_memory; "
            "print(json.dumps({'line': keep_freed_memory()}))")
    assert run_loop(code, **env)["line"] is None


def test_the_cli_keeps_freed_memory():
    # The audioembed command applies it before any command runs (the group's callback runs
    # before the subcommand parses its --help).
    code = ("import sys; from audioembed import allocator, cli\n"
            "try:\n    cli.main(['info', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(allocator._applied)")
    out = run_python(code)
    if allocator._glibc_mallopt() is None:
        assert out.strip() == "None"
    else:
        assert "glibc malloc: mmap threshold 64 MiB, trim threshold 256 MiB" in out
