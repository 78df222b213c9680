"""tools/evaluate_pretrained.py refuses what it cannot evaluate in one line, exit 2, like seqvae
itself (issue 23, item 9): crafted, empty or damaged files and models of another kind."""
import importlib.util
import os
from pathlib import Path

import pytest
import torch
from tiny_runs import TINY_IMAGE_RUN

from seqvae.config import RunConfig, apply_overrides
from seqvae.training import train

TOOL = Path(__file__).resolve().parents[1] / "tools" / "evaluate_pretrained.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("evaluate_pretrained", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _one_line(capsys):
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in captured.err and len(err.splitlines()) == 1, err
    assert err.startswith("evaluate_pretrained: error: ")
    return err


def test_a_crafted_checkpoint_is_refused_in_one_line(tool, tmp_path, capsys):
    marker = tmp_path / "ran"
    run = tmp_path / "crafted"
    run.mkdir()
    torch.save({"format": "seqvae", "version": 1, "step": 0, "model": {}, "config": _RunsCode(marker)},
               run / "checkpoint.pt")
    assert tool.main([str(run), "--episodes", "0"]) == 2
    assert "holds pickled code objects" in _one_line(capsys) and not marker.exists()
    (tmp_path / "empty.pt").write_bytes(b"")
    assert tool.main([str(tmp_path / "empty.pt")]) == 2
    assert "is empty (0 bytes)" in _one_line(capsys)


def test_a_model_of_another_kind_is_refused_in_one_line(tool, tmp_path, capsys):
    run = tmp_path / "image"
    train(RunConfig.from_dict(apply_overrides(TINY_IMAGE_RUN, [f"train.out_dir={run}", "train.steps=1"])),
          progress=False)
    capsys.readouterr()
    assert tool.main([str(run), "--episodes", "0"]) == 2
    assert "holds a conv_vae model of data set 'shapes'; this tool evaluates video models" in _one_line(capsys)
    assert tool.main([str(run), "--write-card-figures"]) == 2
    assert "--write-card-figures needs --pretrained NAME" in _one_line(capsys)
