"""tools/pusher_contact.py: tracked on the true frames, the gripper's travel and the pushes
equal the truth's; a frozen last context frame moves neither gripper nor objects; the
command line reads a shipped model and refuses bad input with exit status 2."""
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools.pusher_contact import main, sample_parts, summarize, true_parts  # noqa: E402

N_CTX, REACH = 2, 0.18 + 0.2 + 0.05


def figures(batch, samples):
    n_future = batch["frames"].shape[1] - N_CTX
    sums = {k: float(v) for k, v in {**true_parts(batch, N_CTX, n_future, REACH),
                                     **sample_parts(samples, batch, N_CTX, REACH)}.items()}
    return summarize(sums, batch["frames"].shape[0], samples.shape[0])


def test_the_true_frames_reach_and_push_as_the_truth_does_and_a_frozen_frame_does_neither(pusher_test_batch):
    batch = pusher_test_batch
    truth = batch["frames"][:, N_CTX:]
    exact = figures(batch, torch.stack([truth, truth]))
    assert exact.gripper_travel_true > 0.4 and exact.reached_true > 0.3        # the random policy reaches objects
    assert exact.gripper_travel_predicted == pytest.approx(exact.gripper_travel_true, abs=0.03)
    assert exact.reached_predicted == pytest.approx(exact.reached_true, abs=0.1)
    assert exact.reached_travel_predicted == pytest.approx(exact.reached_travel_true, abs=0.05)
    assert exact.reached_travel_true > 0.15                                    # reached objects are pushed
    frozen = batch["frames"][:, N_CTX - 1][:, None].expand_as(truth)
    still = figures(batch, torch.stack([frozen, frozen]))
    assert still.gripper_travel_predicted < 0.03
    assert still.reached_predicted < exact.reached_true                         # only what starts within reach
    assert still.unreached_travel_predicted < 0.02
    assert math.isnan(still.reached_travel_predicted) or still.reached_travel_predicted < 0.03
    # Half the samples true, half frozen: the gripper travels half as far.
    mixed = figures(batch, torch.stack([frozen, truth]))
    assert mixed.gripper_travel_predicted == pytest.approx(
        (exact.gripper_travel_predicted + still.gripper_travel_predicted) / 2, abs=1e-5)


def test_the_command_line_reads_a_shipped_model_and_refuses_a_missing_checkpoint(capsys):
    assert main(["--pretrained", "pusher", "--sequences", "8", "--samples", "2", "--split", "test"]) == 0
    printed = capsys.readouterr().out
    assert '"gripper_travel_predicted"' in printed and '"samples": 2' in printed
    assert main(["runs/no_such_run"]) == 2
    assert "pusher_contact: error:" in capsys.readouterr().err
    assert main(["--pretrained", "pusher", "--samples", "0"]) == 2
    assert "at least one sequence and one sample" in capsys.readouterr().err
