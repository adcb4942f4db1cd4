"""Outputs are written through a temporary file and a rename: a crash mid-write leaves the old file intact."""

import json
import os

import pytest
import torch

from robustlab.errors import RobustlabError
from robustlab.tasks import write_json
from robustlab.utils import atomic_path, save_atomic


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "report.json"
    write_json(path, {"a": 1})
    with pytest.raises(RobustlabError, match="No space left on device.*fix: free disk space"), atomic_path(path) as tmp:
        tmp.write_text('{"a": 2, "trunc')
        raise OSError(28, "No space left on device")
    with pytest.raises(ValueError), atomic_path(path) as tmp:
        tmp.write_text("{")
        raise ValueError("not an I/O error: passed on as it is")
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_json_and_tensors_land_whole(tmp_path):
    write_json(tmp_path / "sub" / "summary.json", {"b": [1, 2]})
    save_atomic({"x": torch.arange(3)}, tmp_path / "adv" / "fgsm.pt")
    assert json.loads((tmp_path / "sub" / "summary.json").read_text()) == {"b": [1, 2]}
    assert torch.equal(torch.load(tmp_path / "adv" / "fgsm.pt", weights_only=True)["x"], torch.arange(3))
    assert not list(tmp_path.rglob("*.tmp"))


def test_outputs_keep_the_users_permissions(tmp_path):
    """mkstemp makes its file 0600; the renamed output gets the mode a plain open() would give it (0666 & ~umask)."""
    from robustlab.utils import atomic_path

    mask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "report.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(mask)
    assert (tmp_path / "report.json").stat().st_mode & 0o777 == 0o644
