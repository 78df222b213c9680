"""Nothing lost, nothing overwritten (issue 11): Ctrl-C / SIGTERM, restarting a run that died
before its first checkpoint, resuming from the checkpoint's own config, one monotone metrics
history, stale temporary files, foreign folders, splits checked at start."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from tiny_runs import TINY_IMAGE_RUN

from seqvae.checkpoint import load_checkpoint
from seqvae.cli import main as cli_main
from seqvae.config import ConfigError, RunConfig, apply_overrides
from seqvae.training import train

REPO = Path(__file__).resolve().parents[1]
BASE = TINY_IMAGE_RUN  # tests/tiny_runs.py


def _cfg(run, *overrides):
    return RunConfig.from_dict(apply_overrides(BASE, [f"train.out_dir={run}", *overrides]))


def _yaml(tmp_path, run, *overrides, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(apply_overrides(BASE, [f"train.out_dir={run}", *overrides])))
    return path


def _lines(run, name="metrics.jsonl"):
    return [json.loads(x) for x in (run / name).read_text().splitlines()]


# ------------------------------------------------------------------ 1. signals
def _launch(tmp_path, run, *command):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, *command], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for_steps(proc, run, steps, timeout=90):
    """Block until metrics.jsonl holds ``steps`` train lines (log_every=1)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        metrics = run / "metrics.jsonl"
        if metrics.exists() and metrics.read_text().count('"train"') >= steps:
            return
        time.sleep(0.05)
    raise AssertionError("training did not start")


SLOW_RUN = ("train.steps=1000000", "train.log_every=1", "train.checkpoint_every=1000", "train.eval_every=0")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_finishes_the_step_checkpoints_and_exits_128_plus_signal(tmp_path, signum):
    run = tmp_path / "run"
    proc = _launch(tmp_path, run, "-m", "seqvae.cli", "train", str(_yaml(tmp_path, run, *SLOW_RUN)))
    _wait_for_steps(proc, run, 3)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in out + err
    last = err.strip().splitlines()[-1]
    name = signal.Signals(signum).name
    assert last.startswith(f"seqvae train: {name}: stopped after step") and "--resume" in last
    assert f"train.out_dir={run}" in last and str(run / "checkpoint.pt") in last
    payload = load_checkpoint(run / "checkpoint.pt")
    done = [r["step"] for r in _lines(run) if r["split"] == "train"]
    assert payload["step"] == done[-1] >= 3           # steps lost: 0 (every finished step is in the checkpoint)
    assert f"after step {payload['step']}," in last
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    if signum == signal.SIGINT:   # the printed command resumes it
        assert cli_main(["train", str(tmp_path / "cfg.yaml"), "--resume", f"train.out_dir={run}",
                         f"train.steps={payload['step'] + 2}"]) == 0
        steps = [r["step"] for r in _lines(run) if r["split"] == "train"]
        assert steps == list(range(1, payload["step"] + 3))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_the_process_group_with_loader_workers(tmp_path, signum):
    """A terminal's Ctrl-C, or ``kill -TERM -- -PGID``, reaches the whole process group,
    DataLoader workers included: the same checkpoint, one line and exit status as without."""
    run = tmp_path / "run"
    proc = _launch(tmp_path, run, "-m", "seqvae.cli", "train",
                   str(_yaml(tmp_path, run, *SLOW_RUN, "train.num_workers=2")))
    _wait_for_steps(proc, run, 3)
    os.killpg(proc.pid, signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum and "Traceback" not in out + err, err
    assert "killed by signal" not in err and "Exception ignored" not in err
    assert err.strip().splitlines()[-1].startswith(f"seqvae train: {signal.Signals(signum).name}: stopped after step")
    payload = load_checkpoint(run / "checkpoint.pt")
    assert payload["step"] == [r["step"] for r in _lines(run) if r["split"] == "train"][-1]


def test_second_signal_stops_at_once_and_copies_of_the_first_count_once(tmp_path, monkeypatch):
    from seqvae.training import interrupt
    from seqvae.training.interrupt import StopSignals, TrainingInterrupted

    before = signal.getsignal(signal.SIGINT)   # default_int_handler; SIG_IGN when started in the background
    with StopSignals(tmp_path) as signals:
        signals.step = 4
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)      # a copy (terminal + torchrun): no second request
        assert signals.requested(torch.device("cpu")) == signal.SIGINT
        monkeypatch.setattr(interrupt, "REPEAT_WINDOW_S", 0.0)
        with pytest.raises(TrainingInterrupted) as stop:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)   # the handler raises before this ends
    assert stop.value.exit_code == 130 and not stop.value.saved
    assert "stopped at once during step 5" in str(stop.value)
    assert signal.getsignal(signal.SIGINT) is before                      # restored


def test_second_signal_during_a_checkpoint_write_corrupts_nothing(tmp_path, monkeypatch):
    from seqvae.training import interrupt
    from seqvae.training.interrupt import TrainingInterrupted

    real_save = torch.save
    monkeypatch.setattr(interrupt, "REPEAT_WINDOW_S", 0.0)
    before = signal.getsignal(signal.SIGINT)

    def save(obj, f, *args, **kwargs):
        if obj["step"] == 6:                     # Ctrl-C twice while step 6's checkpoint is half written
            f.write(b"half a checkpoint")
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted) as stop:
        train(_cfg(run, "train.log_every=1", "train.eval_every=0"), progress=False)
    assert not stop.value.saved and stop.value.exit_code == 130 and "stopped at once during step 6" in str(stop.value)
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 3          # the last complete checkpoint stays
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.yaml", "images", "metrics.jsonl",
                                                      "run.json"]       # no temporary file
    assert [r["step"] for r in _lines(run)] == [1, 2, 3, 4, 5, 6]       # every line whole
    assert signal.getsignal(signal.SIGINT) is before                      # restored


def _children(pid):
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.slow   # ~10 s: two ranks under torchrun (make test-all)
def test_ddp_ranks_stop_together_when_one_is_signalled(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = tmp_path / "run"
    proc = _launch(tmp_path, run, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
                   "-m", "seqvae.cli", "train", str(_yaml(tmp_path, run, *SLOW_RUN)))
    _wait_for_steps(proc, run, 3)
    workers = _children(proc.pid)
    rank1 = [w for w in workers if b"RANK=1\x00" in Path(f"/proc/{w}/environ").read_bytes().replace(b"LOCAL_", b"")]
    os.kill(rank1[0], signal.SIGTERM)      # only rank 1 is told; rank 0 must stop after the same step
    proc.communicate(timeout=90)
    payload = load_checkpoint(run / "checkpoint.pt")
    assert payload["step"] == [r["step"] for r in _lines(run) if r["split"] == "train"][-1] >= 3
    assert len(payload["rng"]["torch"]) == 2   # both ranks took part in the checkpoint


# --------------------------------------- 2. a run that died before its first checkpoint
@pytest.mark.parametrize("resume", [False, True])
def test_run_without_checkpoint_restarts_and_keeps_old_metrics(tmp_path, resume, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(_cfg(run).to_dict()))
    (run / "metrics.jsonl").write_text('{"step": 2, "split": "train", "loss": 1.0}\n')
    train(_cfg(run), resume=resume, progress=False)
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 6
    moved = [p for p in run.iterdir() if p.name.startswith("metrics.") and p.name != "metrics.jsonl"]
    assert len(moved) == 1 and moved[0].read_text() == '{"step": 2, "split": "train", "loss": 1.0}\n'
    assert "stopped before its first checkpoint" in capsys.readouterr().out
    assert [r["step"] for r in _lines(run) if r["split"] == "train"] == [2, 4, 6]


# --------------------------------- 3. the checkpoint's config is the truth on --resume
def test_failed_resume_leaves_config_yaml_alone(tmp_path, capsys):
    run = tmp_path / "run"
    path = _yaml(tmp_path, run)
    assert cli_main(["train", str(path)]) == 0
    config, ckpt = (run / "config.yaml").read_bytes(), (run / "checkpoint.pt").read_bytes()
    assert cli_main(["train", str(path), "--resume", "model.latent_dim=8", "train.steps=9"]) == 2
    err = capsys.readouterr().err
    assert "model.latent_dim: 4 -> 8" in err and "change the shapes" in err and "Traceback" not in err
    assert (run / "config.yaml").read_bytes() == config and (run / "checkpoint.pt").read_bytes() == ckpt
    assert cli_main(["train", str(path), "--resume", "likelihood.name=shared_sigma", "train.steps=9"]) == 2
    assert "likelihood.name='shared_sigma'" in capsys.readouterr().err
    assert cli_main(["train", str(path), "--resume", "train.steps=9"]) == 0   # the run is not broken
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 9


def test_resume_ignores_a_half_written_config_yaml(tmp_path):
    run = tmp_path / "run"
    path = _yaml(tmp_path, run, "train.lr=0.002", "train.batch_size=4")
    assert cli_main(["train", str(path)]) == 0
    text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(text[:text.index("train:")])       # cut before the train section
    assert cli_main(["train", str(path), "--resume", "train.steps=8"]) == 0
    payload = load_checkpoint(run / "checkpoint.pt")
    assert payload["step"] == 8
    assert payload["config"]["train"]["lr"] == 0.002 and payload["config"]["train"]["batch_size"] == 4
    assert yaml.safe_load((run / "config.yaml").read_text()) == payload["config"]   # rewritten whole


# ------------------------------------------ 4. one monotone metrics history after resume
def test_metrics_past_the_checkpoint_are_dropped_on_resume(tmp_path):
    run = tmp_path / "run"
    train(_cfg(run, "train.log_every=1"), progress=False)                      # checkpoint at 6
    with (run / "metrics.jsonl").open("a") as f:                                # a kill after step 8's log line
        f.write('{"step": 7, "split": "train"}\n{"step": 8, "split": "train"}\n{"step": 9, "spl')
    train(_cfg(run, "train.log_every=1", "train.steps=10"), resume=True, progress=False)
    steps = [r["step"] for r in _lines(run) if r["split"] == "train"]
    assert steps == list(range(1, 11))


# ------------------------------------------------------------ 5. stale temporary files
def test_stale_temporary_files_are_removed_on_start(tmp_path):
    run = tmp_path / "run"
    train(_cfg(run), progress=False)
    stale = [run / ".checkpoint.pt.k3x_9abc.tmp", run / ".config.0123abcd.tmp.yaml",
             run / "images" / ".step_0000006_samples.89abcdef.tmp.png"]
    for path in stale:
        path.write_bytes(b"half a file")
    mine = [run / "notes.tmp", run / ".checkpoint.pt.mine"]
    for path in mine:
        path.write_text("the user's")
    train(_cfg(run), resume=True, progress=False)            # already finished: nothing to train, still cleaned
    assert not any(p.exists() for p in stale) and all(p.exists() for p in mine)
    stale[0].write_bytes(b"half a file")
    train(_cfg(run, "train.steps=7"), resume=True, progress=False)
    assert not stale[0].exists() and all(p.exists() for p in mine)


# ------------------------------------------------------------ 6. foreign folders
def test_non_empty_folder_without_a_run_is_refused_unless_forced(tmp_path, capsys):
    run = tmp_path / "photos"
    run.mkdir()
    (run / "holiday.png").write_bytes(b"png")
    (run / "config.yaml.bak").write_text("mine")
    path = _yaml(tmp_path, run)
    assert cli_main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "holds no seqvae run" in err and "holiday.png" in err and "--force" in err
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml.bak", "holiday.png"]
    assert cli_main(["train", str(path), "--force"]) == 0
    assert (run / "holiday.png").read_bytes() == b"png" and (run / "checkpoint.pt").exists()


@pytest.mark.parametrize("forced", [False, True])
def test_a_users_own_config_yaml_is_not_a_run(tmp_path, capsys, forced):
    """A folder is a seqvae run only if its files say so (issue 23, item 4): a user's
    config.yaml and a PNG under images/ are refused like any foreign files, and --force keeps them."""
    run = tmp_path / "mine"
    (run / "images").mkdir(parents=True)
    mine = {run / "config.yaml": b"learning_rate: 0.1\nlayers: [64, 64]\n", run / "images" / "cat.png": b"\x89PNG..."}
    for path, data in mine.items():
        path.write_bytes(data)
    path = _yaml(tmp_path, run)
    for resume in ([], ["--resume"]):
        assert cli_main(["train", str(path), *resume]) == 2
        err = capsys.readouterr().err
        assert "holds no seqvae run" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert ("config.yaml (not seqvae's)" in err and "images/cat.png" in err and "--force" in err) if not resume \
            else "--resume" in err
        assert all(p.read_bytes() == data for p, data in mine.items())
        assert sorted(p.name for p in run.rglob("*")) == ["cat.png", "config.yaml", "images"]   # nothing written
    if not forced:
        return
    assert cli_main(["train", str(path), "--force"]) == 0
    out = capsys.readouterr().out
    kept = [p for p in run.iterdir() if p.name.startswith("config.") and p.name != "config.yaml"]
    assert len(kept) == 1 and kept[0].read_bytes() == mine[run / "config.yaml"] and kept[0].name in out
    assert (run / "images" / "cat.png").read_bytes() == mine[run / "images" / "cat.png"]
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 6


def test_seqvaes_own_files_are_recognised_by_content(tmp_path):
    from seqvae.training import run_files

    run = tmp_path / "run"
    train(_cfg(run), progress=False)
    assert run_files.is_run_config(run / "config.yaml") and run_files.is_metrics_log(run / "metrics.jsonl")
    assert run_files.is_run_record(run / "run.json")
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 7, "spl')                       # a line a kill cut short is still seqvae's
    assert run_files.is_metrics_log(run / "metrics.jsonl")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text("model: {name: resnet}\ntrain: {lr: 0.1}\n")
    (other / "metrics.jsonl").write_text('{"epoch": 1, "acc": 0.5}\n')
    (other / "run.json").write_text('{"name": "mine"}')
    assert not run_files.is_run_config(other / "config.yaml") and not run_files.is_metrics_log(other / "metrics.jsonl")
    assert run_files.foreign_entries(other) == ["config.yaml (not seqvae's)", "metrics.jsonl (not seqvae's)",
                                                "run.json (not seqvae's)"]


# --------------------------------------------- 15. one writer per run folder (issue 23, item 3)
def test_a_second_train_on_a_running_run_folder_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    path = _yaml(tmp_path, run, *SLOW_RUN, "train.checkpoint_every=2")
    proc = _launch(tmp_path, run, "-m", "seqvae.cli", "train", str(path))
    try:
        _wait_for_steps(proc, run, 3)
        while not (run / "checkpoint.pt").exists():
            time.sleep(0.05)
        for command in (["train", str(path)], ["train", str(path), "--resume"],
                        ["train", str(_yaml(tmp_path, run, "train.lr=0.002", name="other.yaml"))]):
            assert cli_main(command) == 2
            err = capsys.readouterr().err
            assert f"{run} is in use: another seqvae train (pid {proc.pid})" in err and "Traceback" not in err
            assert len(err.strip().splitlines()) == 1
        assert proc.poll() is None                          # the running run was not disturbed
        proc.kill()                                         # a lock dies with its process
        proc.wait()
        assert (run / "train.lock").exists()
        config, steps = (run / "config.yaml").read_bytes(), load_checkpoint(run / "checkpoint.pt")["step"] + 2
        assert cli_main(["train", str(path), "--resume", f"train.steps={steps}"]) == 0
        assert not (run / "train.lock").exists() and load_checkpoint(run / "checkpoint.pt")["step"] == steps
        assert config != (run / "config.yaml").read_bytes()   # the resume wrote it (train.steps changed)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_lock_is_held_for_the_whole_run_and_dropped_at_its_end(tmp_path, monkeypatch):
    import seqvae.training.loop as loop
    from seqvae.training.run_folder import RunFolderError

    run = tmp_path / "run"
    seen = []
    real = loop.periodic_checkpoint

    def checkpoint_and_try_a_second_writer(session, is_last):
        with pytest.raises(RunFolderError, match=f"pid {os.getpid()}"):   # another open of the lock file conflicts
            train(_cfg(run), resume=True, progress=False)
        seen.append(session.step)
        return real(session, is_last)

    monkeypatch.setattr(loop, "periodic_checkpoint", checkpoint_and_try_a_second_writer)
    train(_cfg(run), progress=False)
    assert seen == [1, 2, 3, 4, 5, 6] and not (run / "train.lock").exists()
    assert train(_cfg(run, "train.steps=4"), dry_run=True, progress=False) == run   # a dry run writes no lock


def test_a_lock_that_cannot_be_written_is_released(tmp_path, monkeypatch, capsys):
    import errno

    def full(fd, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    run = tmp_path / "run"
    path = _yaml(tmp_path, run)
    with monkeypatch.context() as patch:
        patch.setattr(os, "ftruncate", full)
        assert cli_main(["train", str(path)]) == 2
    assert "the disk is full" in capsys.readouterr().err and not run.exists()   # the folder it made is gone
    assert cli_main(["train", str(path)]) == 0                                   # and no lock stayed behind


# --------------------------------------------- 14. splits at start, checkpoint first
def test_empty_test_split_is_found_before_training(tmp_path, monkeypatch):
    import seqvae.training.loop as train_module

    steps = []
    real = train_module.batch_to_device
    monkeypatch.setattr(train_module, "batch_to_device", lambda *a: steps.append(1) or real(*a))
    with pytest.raises(ConfigError, match="the test split of data set 'shapes' is empty"):
        train(_cfg(tmp_path / "run", "data.test_size=0"), progress=False)
    assert steps == [] and not (tmp_path / "run").exists()


def test_final_checkpoint_is_written_before_the_final_evaluation(tmp_path, monkeypatch):
    import seqvae.training.loop as train_module

    def failing_evaluation(*args, **kwargs):
        raise RuntimeError("evaluation ran out of memory")

    monkeypatch.setattr(train_module, "evaluate_elbo", failing_evaluation)
    with pytest.raises(RuntimeError, match="out of memory"):
        train(_cfg(tmp_path / "run", "train.eval_every=0", "train.checkpoint_every=0"), progress=False)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 6
