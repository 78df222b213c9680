"""User-fixable mistakes reach the user as one clear line and exit status 2, from every
command (issue 11, items 11 and 12): bad YAML, values the loop cannot run with, a file in
the way or a full disk, weights that do not fit, unsafe or empty checkpoint files."""
import errno
import os
import re
from types import SimpleNamespace

import pytest
import torch
import yaml

from seqvae.checkpoint import CheckpointError, load_checkpoint
from seqvae.cli import main as cli_main
from seqvae.config import ConfigError, RunConfig, apply_overrides
from seqvae.loading import load_model
from seqvae.training import train

BASE = {
    "data": {"name": "shapes", "image_size": 16, "train_size": 40, "test_size": 16, "val_size": 8},
    "model": {"name": "conv_vae", "base_channels": 8, "latent_dim": 4},
    "likelihood": {"name": "optimal_sigma"},
    "train": {"steps": 3, "batch_size": 8, "log_every": 1, "eval_every": 0, "eval_batches": 1, "image_every": 0,
              "checkpoint_every": 0},
}


def _yaml(tmp_path, *overrides, text=None):
    path = tmp_path / "cfg.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(apply_overrides(BASE, list(overrides))))
    return path


def _one_clear_line(capsys, command="train"):
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in captured.err + captured.out
    assert len(err.splitlines()) == 1 and err.startswith(f"seqvae {command}: error: "), err
    return err


# ---------------------------------------------------------------- 12. config values
@pytest.mark.parametrize("override, message", [
    ("train.log_every=0", "train.log_every must be at least 1, got 0"),
    ("data.image_size=-16", "data.image_size must be at least 1, got -16"),
    ("model.latent_dim=0", "model.latent_dim must be at least 1, got 0"),
    ("train.checkpoint_every=-5", "train.checkpoint_every must be 0 or more (0: only at the end), got -5"),
    ("train.out_dir=", "train.out_dir must name the run folder"),
])
def test_values_the_loop_cannot_run_with_are_refused(tmp_path, monkeypatch, capsys, override, message):
    monkeypatch.chdir(tmp_path)
    path = _yaml(tmp_path, f"train.out_dir={tmp_path / 'run'}")
    assert cli_main(["train", str(path), override]) == 2
    assert message in _one_clear_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml"]     # nothing was written
    with pytest.raises(ConfigError, match=re.escape(message)):              # the config itself refuses it
        RunConfig.from_dict(apply_overrides(BASE, [override]))


# ------------------------------------------------------------------ 12. YAML
def test_yaml_syntax_error_names_the_line(tmp_path, capsys):
    path = _yaml(tmp_path, text="data: {name: shapes\nmodel: {name: conv_vae}\n")
    assert cli_main(["train", str(path)]) == 2
    err = _one_clear_line(capsys)
    assert f"{path}: line 2" in err and "not valid YAML" in err
    assert cli_main(["train", str(_yaml(tmp_path)), "train.lr=[1"]) == 2
    assert "override 'train.lr=[1'" in _one_clear_line(capsys)


def test_python_tags_in_yaml_are_refused_and_never_run(tmp_path, capsys):
    marker = tmp_path / "ran"
    text = yaml.safe_dump(BASE) + f"extra: !!python/object/apply:os.system ['touch {marker}']\n"
    assert cli_main(["train", str(_yaml(tmp_path, text=text))]) == 2
    err = _one_clear_line(capsys)
    assert "!!python/object/apply:os.system" in err and "never construct" in err
    assert not marker.exists()


# -------------------------------------------------------------- 12. disks and paths
def test_output_path_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "taken").write_text("a file")
    assert cli_main(["train", str(_yaml(tmp_path, f"train.out_dir={tmp_path / 'taken'}"))]) == 2
    assert "is a file, not a folder" in _one_clear_line(capsys)
    assert cli_main(["train", str(_yaml(tmp_path, f"train.out_dir={tmp_path / 'taken' / 'run'}"))]) == 2
    assert "a file is in the way" in _one_clear_line(capsys)
    assert (tmp_path / "taken").read_text() == "a file"


def test_full_disk_while_checkpointing_is_a_clear_error(tmp_path, monkeypatch, capsys):
    def full(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    run = tmp_path / "run"
    assert cli_main(["train", str(_yaml(tmp_path, f"train.out_dir={run}"))]) == 2
    err = _one_clear_line(capsys)
    assert f"{run / 'checkpoint.pt'}: No space left on device" in err and "the disk is full" in err
    assert not (run / "checkpoint.pt").exists() and not [p for p in run.iterdir() if p.name.endswith(".tmp")]


class _FillingDisk:
    """A file on a disk that fills up after ``room`` bytes: its write raises ENOSPC, as a full disk's does."""

    def __init__(self, handle, room):
        self.handle, self.room = handle, room

    def write(self, data):
        size = memoryview(data).nbytes
        if size > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= size
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)


@pytest.mark.parametrize("torch_keeps_the_cause", [True, False])
def test_disk_filling_up_inside_torch_save_is_a_clear_error(tmp_path, monkeypatch, capsys, torch_keeps_the_cause):
    """A larger checkpoint fills the disk inside torch's zip writer, which reports its own
    "[enforce fail at inline_container.cc] unexpected pos" (issue 23, item 2)."""
    import seqvae.checkpoint as checkpoint_module

    real_save, saves = torch.save, []

    def save(obj, f, *args, **kwargs):
        saves.append(obj["step"])
        if len(saves) == 1:
            return real_save(obj, f, *args, **kwargs)              # the first checkpoint fits
        if torch_keeps_the_cause:
            return real_save(obj, _FillingDisk(f, room=4096), *args, **kwargs)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 832 vs 726")

    monkeypatch.setattr(torch, "save", save)
    if not torch_keeps_the_cause:   # then the disk's free space tells
        monkeypatch.setattr(checkpoint_module.shutil, "disk_usage", lambda path: SimpleNamespace(free=4096))
    run = tmp_path / "run"
    path = _yaml(tmp_path, f"train.out_dir={run}", "train.steps=6", "train.checkpoint_every=3")
    assert cli_main(["train", str(path)]) == 2
    err = _one_clear_line(capsys)
    assert f"{run / 'checkpoint.pt'}: No space left on device" in err and "the disk is full" in err
    assert "inline_container" not in err and saves == [3, 6]
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 3          # the previous checkpoint is intact
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_a_torch_write_error_on_a_disk_with_room_is_not_called_a_full_disk(tmp_path, monkeypatch):
    def broken(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 832 vs 726")

    monkeypatch.setattr(torch, "save", broken)
    from seqvae.checkpoint import save_checkpoint

    with pytest.raises(RuntimeError, match="unexpected pos"):
        save_checkpoint(tmp_path / "checkpoint.pt", {"step": 1})
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------ 12. shapes on load
def test_override_that_changes_the_shapes_on_load_is_a_clear_error(tmp_path, capsys):
    run = tmp_path / "run"
    train(RunConfig.from_dict(apply_overrides(BASE, [f"train.out_dir={run}"])), progress=False)
    assert cli_main(["eval", str(run), "model.latent_dim=8"]) == 2
    err = _one_clear_line(capsys, "eval")
    assert "model.latent_dim: 4 -> 8" in err and "change the shapes" in err
    # weights that do not fit their own config: the file is named, no torch traceback
    payload = load_checkpoint(run)
    payload["model"]["to_posterior.weight"] = torch.zeros(3, 3)
    torch.save(payload, run / "edited.pt")
    with pytest.raises(CheckpointError, match=r"edited\.pt: the weights do not fit .*to_posterior\.weight"):
        load_model(run / "edited.pt")


# -------------------------------------------------------------- 11. unsafe / empty files
class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_code_objects_is_refused_plainly(tmp_path, capsys):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"format": "seqvae", "version": 1, "step": 0, "model": {}, "config": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert "holds pickled code objects" in message and "system" in message and "was refused" in message
    assert "weights_only" not in message and "truncated" not in message
    assert cli_main(["eval", str(path)]) == 2
    assert "holds pickled code objects" in _one_clear_line(capsys, "eval")
    assert not marker.exists()


def test_empty_checkpoint_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    for command in ("eval", "sample"):
        assert cli_main([command, str(tmp_path / "checkpoint.pt")]) == 2
        assert "is empty (0 bytes)" in _one_clear_line(capsys, command)
    assert cli_main(["train", str(_yaml(tmp_path, f"train.out_dir={tmp_path}")), "--resume"]) == 2
    assert "is empty (0 bytes)" in _one_clear_line(capsys)
    assert (tmp_path / "checkpoint.pt").read_bytes() == b""


# ----------------------------------------------- planning and rollout misuse (issue 23, item 6)
@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("image") / "run"
    train(RunConfig.from_dict(apply_overrides(BASE, [f"train.out_dir={run}"])), progress=False)
    return run


ROLLOUT = ["rollout", "--pretrained", "pusher-actions", "--index", "0"]


@pytest.mark.parametrize("argv, message", [
    (["plan", "pretrained=pusher-actions", "plan.episodes=0"], "plan.episodes and plan.steps must be at least 1"),
    (["plan", "pretrained=pusher-actions", "plan.episodes=-1"], "plan.episodes and plan.steps must be at least 1"),
    (["plan", "checkpoint={run}"], "{run} is not an action-conditioned video model"),
    (["plan", "pretrained=pusher-actions", "device=cuda"], "device=cuda but this machine has no CUDA GPU; use cpu"),
    (["plan", "pretrained=pusher-actions", "threads=-1"], "threads must be 0 (chosen from measured step times)"),
    (["plan", "pretrained=pusher-actions", "checkpoint={run}"], "give one model, not both"),
    ([*ROLLOUT, "--device", "cuda"], "--device=cuda but this machine has no CUDA GPU; use cpu"),
    (["eval", "{run}", "--device", "cuda"], "--device=cuda but this machine has no CUDA GPU"),
    (["sample", "{run}", "--device", "cuda"], "--device=cuda but this machine has no CUDA GPU"),
    (["analyze", "{run}", "--device", "cuda"], "--device=cuda but this machine has no CUDA GPU"),
    ([*ROLLOUT, "--device", "gpu"], "--device=gpu is not a device; use cpu or cuda"),
    ([*ROLLOUT, "--horizon", "0"], "--horizon must be at least 1 (the frames to predict), got 0"),
    ([*ROLLOUT, "--horizon", "-3"], "--horizon must be at least 1 (the frames to predict), got -3"),
    ([*ROLLOUT, "--start", "-5"], "--start must be 0 or more (the first context frame in the source), got -5"),
    ([*ROLLOUT, "--samples", "0"], "--samples must be at least 1, got 0"),
    ([*ROLLOUT, "--actions", "{notes}"], "{notes} is a text file; --actions reads an .npz of arrays with 'actions'"),
    ([*ROLLOUT, "--actions", "{run}/checkpoint.pt"], "is a torch checkpoint (a model for seqvae eval / rollout"),
    (["rollout", "--pretrained", "pusher-actions", "--video", "{notes}"], "--video {notes} is not a video seqvae can"),
    (["rollout", "{run}", "--index", "0"], "holds an image model (conv_vae); rollouts need a video model"),
])
def test_planning_and_rollout_misuse_is_one_line_naming_the_input(image_run, tmp_path, monkeypatch, capsys, argv,
                                                                  message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)   # a CPU-only machine, wherever this runs
    monkeypatch.chdir(tmp_path)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    fill = {"run": image_run, "notes": notes}
    argv = [a.format(**fill) for a in argv]
    assert cli_main(argv) == 2
    err = _one_clear_line(capsys, argv[0])
    assert message.format(**fill) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]       # nothing was written
