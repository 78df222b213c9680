"""The second world: a point mass moved by forces, planned in by the same harness and
command as the pushing world. A model trained on it for a short while in the test plans
better than random actions."""
from __future__ import annotations

import pytest
import torch

from seqvae import registry
from seqvae.control.cem import CEMConfig
from seqvae.control.harness import PlanEvalConfig, evaluate_planning
from seqvae.worlds.pointmass.dataset import PointMassDataConfig, PointMassDataset
from seqvae.worlds.pointmass.world import PointMassConfig, PointMassEnv, locate_mass, render, step

CFG = PointMassConfig()
PIXEL = 2.0 / CFG.image_size


def test_rendered_mass_is_found_where_it_is_and_the_goal_image_shows_it_at_the_goal():
    pos = torch.rand(50, 2, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    found = locate_mass(render(CFG, pos).float() / 255, torch.zeros(1, 2))
    assert (found - pos).norm(dim=-1).max() < 0.5 * PIXEL
    env = PointMassEnv()
    env.reset(3)
    at_goal = locate_mass(env.goal_image()[None].float() / 255, torch.zeros(1, 2))[0]
    assert (at_goal - env.goal[0]).norm() < 0.5 * PIXEL
    assert env.distance() >= CFG.goal_min_distance and not env.success()


def test_dynamics_closed_form_and_walls():
    """From rest, a constant unit force moves the mass force·(1 + d + … + d^{t−1}) per step
    (a geometric velocity); at a wall it stops inside the table and turns back."""
    pos, vel = torch.zeros(1, 2), torch.zeros(1, 2)
    a = torch.tensor([[1.0, 0.0]])
    for _ in range(3):
        pos, vel = step(CFG, pos, vel, a)
    d, f = CFG.damping, CFG.force
    expected = f * (1 + (1 + d) + (1 + d + d * d))
    torch.testing.assert_close(pos, torch.tensor([[expected, 0.0]]))
    pos, vel = torch.tensor([[0.85, 0.0]]), torch.tensor([[0.2, 0.0]])
    pos, vel = step(CFG, pos, vel, torch.zeros(1, 2))
    assert float(pos[0, 0]) == pytest.approx(1 - CFG.radius) and float(vel[0, 0]) < 0


def test_data_set_items_are_reproducible_and_follow_the_dynamics():
    data = PointMassDataset(PointMassDataConfig(seq_len=6), "train")
    a, b = data[5], data[5]
    assert torch.equal(a["frames"], b["frames"]) and not torch.equal(a["frames"], data[6]["frames"])
    assert a["frames"].shape == (6, 3, 64, 64) and a["actions"].shape == (6, 2)
    pos, vel = a["positions"][:1], torch.zeros(1, 2)
    for t in range(5):
        pos, vel = step(CFG, pos, vel, a["actions"][t:t + 1])
        torch.testing.assert_close(pos, a["positions"][t + 1:t + 2])


def test_a_briefly_trained_model_plans_better_than_random(tmp_path):
    """400 steps of the shipped config's model (about a minute on a CPU; at 150 it has not
    yet learned what the actions do), then the same
    closed-loop harness as the pushing world: random actions, CEM with the true dynamics,
    CEM with the learned model, on 8 fixed episodes."""
    from seqvae.config import RunConfig
    from seqvae.loading import load_model
    from seqvae.training import train

    cfg = RunConfig.load("configs/pointmass/svg_actions.yaml",
                         [f"train.out_dir={tmp_path / 'run'}", "train.steps=400", "train.eval_every=0",
                          "train.image_every=0", "train.checkpoint_every=0", "train.threads=1"])
    model, run_cfg, _ = load_model(train(cfg, progress=False))
    world = registry.world("pointmass")
    plan = PlanEvalConfig(episodes=8, steps=16, replan_every=2, render_episodes=0, seed=7,
                          methods=("random", "true_sim", "learned"),
                          cem=CEMConfig(iterations=2, candidates=48, elites=6, horizon=6))
    results = evaluate_planning(world, plan, model=model, env=world.make_env(run_cfg.data), log=lambda _: None)
    rnd, sim, learned = (results["methods"][m] for m in ("random", "true_sim", "learned"))
    assert sim["success_rate"] >= 0.75
    # the learned model's mean final distance after these 400 steps, over training seeds 0-3 (train.seed),
    # Intel Xeon: 0.34, 0.34, 0.21, 0.48 against random actions' 1.00; the bound leaves room for other
    # CPUs' kernels, which train along other trajectories
    assert learned["mean_final_distance"] < 0.7 * rnd["mean_final_distance"], results["methods"]
    assert learned["success_rate"] >= rnd["success_rate"]
