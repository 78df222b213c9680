"""Colour-tracked object motion: true frames move objects as far as the truth says, a
frozen last context frame moves none, and the best sample is the one that moved."""
import pytest
import torch

from seqvae.data.spec import DataSpec
from seqvae.worlds.pusher.dataset import PusherDataConfig, PusherDataset
from seqvae.worlds.pusher.motion import object_motion, track_objects
from seqvae.worlds.pusher.world import PusherConfig

N_CTX, T = 2, 14


@pytest.fixture(scope="module")
def episodes(pusher_test_batch):
    frames = pusher_test_batch["frames"]
    return {"truth": frames[:, N_CTX:], "last_context": frames[:, N_CTX - 1],
            "object_pos": pusher_test_batch["object_pos"][:, N_CTX - 1:],
            "object_mask": pusher_test_batch["object_mask"], "object_color": pusher_test_batch["object_color"]}


def motion(episodes, samples):
    return object_motion(samples, episodes["truth"], episodes["object_pos"], episodes["object_mask"],
                         episodes["object_color"])


def test_tracking_the_true_frames_follows_the_true_positions(episodes):
    tracks = track_objects(episodes["truth"], episodes["object_color"], episodes["object_pos"][:, 0])
    error = (tracks - episodes["object_pos"][:, 1:]).norm(dim=-1)[
        episodes["object_mask"][:, None].expand_as(tracks[..., 0])]
    assert error.mean() < 0.05 and error.max() < 0.15        # objects are 0.2 table units in radius


def test_true_frames_move_objects_as_far_as_the_truth_and_a_frozen_frame_moves_none(episodes):
    truth, frozen = episodes["truth"], episodes["last_context"][:, None].expand_as(episodes["truth"])
    exact = motion(episodes, torch.stack([truth, truth]))
    assert exact.moving >= 8 and exact.true_displacement > 0.3           # the random policy pushes objects
    assert abs(exact.predicted_displacement - exact.true_displacement) < 0.05
    assert exact.best_error < 0.06 and exact.tracker_error < 0.06
    still = motion(episodes, torch.stack([frozen, frozen]))
    assert still.predicted_displacement < 0.02 and still.still_predicted_displacement < 0.02
    assert abs(still.best_error - still.true_displacement) < 0.02       # staying put errs by the whole travel
    # One frozen and one true sample: the best is the true one, the mean travel half the truth.
    mixed = motion(episodes, torch.stack([frozen, truth]))
    assert mixed.best_error == pytest.approx(exact.best_error, abs=1e-6)
    assert mixed.predicted_displacement == pytest.approx(
        (still.predicted_displacement + exact.predicted_displacement) / 2, abs=1e-5)


def test_mismatched_shapes_are_an_error(episodes):
    with pytest.raises(ValueError, match="last context frame"):
        object_motion(episodes["truth"][None], episodes["truth"], episodes["object_pos"][:, 1:],
                      episodes["object_mask"], episodes["object_color"])


def test_summary_is_strict_json_when_no_object_moved(episodes):
    import json

    frozen = episodes["last_context"][:, None].expand_as(episodes["truth"])
    result = object_motion(frozen[None], frozen, episodes["object_pos"][:, :1].expand_as(episodes["object_pos"]),
                           episodes["object_mask"], episodes["object_color"])
    assert result.moving == 0 and result.objects == int(episodes["object_mask"].sum())
    summary = json.loads(json.dumps(result.summary(), allow_nan=False))
    assert summary["true_displacement"] is None and summary["best_error"] is None
    assert summary["still_predicted_displacement"] < 0.02


class CopyLastFrame(torch.nn.Module):
    """A 'predictor' that holds the last context frame still (a :class:`VideoPredictor`)."""

    n_past, n_eval, z_dim, action_dim = N_CTX, 10, 0, 0
    spec = DataSpec(3, 64, 64, N_CTX + 10)

    def predict(self, context, n_future, actions=None, generator=None, sample_pixels=False, noise=None):
        return context[:, -1:].expand(-1, n_future, -1, -1, -1)

    def rollout_row_bytes(self, horizon, keep_frames):
        return 4 * self.spec.frame_dims * (horizon + 1)


def test_evaluation_over_a_split_is_the_same_whatever_the_batching():
    from seqvae.worlds.pusher.motion import evaluate_object_motion

    ds = PusherDataset(PusherDataConfig(seq_len=T, num_test=20,
                                        world=PusherConfig(num_objects=2, gripper_radius=0.18, object_radius=0.2,
                                                           texture_contrast=0.35)), "test")
    cpu = torch.device("cpu")
    a = evaluate_object_motion(CopyLastFrame(), ds, n_samples=2, n_sequences=13, batch_size=3, device=cpu)
    b = evaluate_object_motion(CopyLastFrame(), ds, n_samples=2, n_sequences=13, batch_size=8, device=cpu)
    assert a.summary() == pytest.approx(b.summary(), abs=1e-6)
    assert a.objects == sum(int(ds[i]["object_mask"].sum()) for i in range(13))
    assert a.moving >= 4 and a.predicted_displacement < 0.02 and abs(a.best_error - a.true_displacement) < 0.02
    with pytest.raises(ValueError, match="object_color"):
        evaluate_object_motion(CopyLastFrame(), [{"frames": torch.zeros(T, 3, 64, 64)}], device=cpu)


def test_evaluation_batches_run_under_the_thread_governor(monkeypatch):
    """Each evaluation batch is one governed step (seqvae.threads): CPU threads are chosen
    from batch times, so evaluation keeps its speed on a shared machine."""
    import seqvae.evaluation.video as video
    from seqvae.threads import ThreadGovernor
    from seqvae.worlds.pusher.motion import evaluate_object_motion

    made = []
    monkeypatch.setattr(video, "loop_governor", lambda device: made.append(ThreadGovernor([1])) or made[-1])
    ds = PusherDataset(PusherDataConfig(seq_len=T, num_test=20), "test")
    evaluate_object_motion(CopyLastFrame(), ds, n_samples=2, n_sequences=13, batch_size=3, device=torch.device("cpu"))
    assert len(made) == 1 and made[0].steps == 5                 # ⌈13 / 3⌉ batches
