"""keep_freed_memory: glibc keeps a freed tensor's memory for the next one instead of handing it back."""

import subprocess
import sys

import pytest

SCRIPT = """
import os, sys, torch
from robustlab.utils import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
page = os.sysconf("SC_PAGE_SIZE")
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
x = torch.ones(5_000_000)  # 20 MB
before = rss()
del x
print(applied, (before - rss()) / 2**20)
"""


def _released(mode: str) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True).stdout
    applied, mib = out.split()
    return applied, float(mib)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_kept_for_reuse_only_when_asked():
    assert _released("default")[1] > 15  # glibc unmaps a 20 MB block at once
    applied, released = _released("keep")
    assert applied == "True"
    assert released < 2
