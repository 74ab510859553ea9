"""The runtime: device selection and the process-wide CPU settings a run makes."""

import platform
import sys

import pytest
import torch

from robust_mc.errors import UserError
from robust_mc.run.runtime import reuse_freed_memory, select_device


def test_device_selection():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserError, match="use auto, cpu or cuda"):
        select_device("tpu")


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="mallopt tuning is glibc's")
def test_freed_memory_is_kept_for_reuse():
    assert reuse_freed_memory()
    x = torch.ones(64 * 2**20 // 4)  # 64 MiB: served from the heap now, the same values
    assert float(x.sum()) == x.numel()
