"""Planning: CEM and MPPI, the pushing costs, the colour tracker, goal-image costs, the
generic MPC loop and harness in the pushing world with the true simulator and with a
(tiny, untrained) learned model, and the plan / render commands.

The planner is tested apart from learning: CEM must solve a known quadratic and, with
the true simulator as its model, push objects to their goals far better than random
actions do.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from seqvae import registry
from seqvae.control.cem import CEMConfig, cem_plan
from seqvae.control.costs import GoalImageCost, pixel_distance_to_goal
from seqvae.control.harness import PlanEvalConfig, episode_seed, evaluate_planning
from seqvae.control.mpc import run_episode
from seqvae.control.mppi import MPPIConfig, mppi_plan
from seqvae.control.optimizers import Planned, PlanOptimizer
from seqvae.control.planner import VideoModelPlanner
from seqvae.worlds.pusher.costs import (
    PushCostConfig,
    frame_pusher_cost,
    gripper_kinematics,
    pusher_object_cost,
    pusher_path_cost,
)
from seqvae.worlds.pusher.planning import PusherEnv, PushTrackerCost, TrueSimulatorModel
from seqvae.worlds.pusher.sim import PusherSim
from seqvae.worlds.pusher.tracking import locate_color
from seqvae.worlds.pusher.world import GRIPPER_INNER

SIM = PusherSim()
PIXEL = SIM.cfg.pixel  # one pixel in table units (2 / 64)
WORLD = registry.world("pusher")


def started(seed: int) -> PusherEnv:
    """The pushing environment at the start of episode ``seed``."""
    env = PusherEnv(SIM)
    env.reset(seed)
    return env


def cem(**settings) -> PlanOptimizer:
    return PlanOptimizer.choose("cem", CEMConfig(**settings))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- CEM
@pytest.mark.parametrize("seed", [0, 1])
def test_cem_minimises_a_quadratic(seed):
    """A weighted quadratic with its optimum inside the box: CEM ends within 0.08 of it
    per coordinate (from a start ~0.5 away), and its best cost falls every iteration."""
    target = torch.rand(4, 2, generator=gen(10 + seed)) * 1.6 - 0.8
    weight = torch.tensor([1.0, 4.0])
    calls = []

    def costs(actions: torch.Tensor) -> torch.Tensor:
        calls.append(actions.shape)
        return (weight * (actions - target) ** 2).sum((1, 2))

    best, info = cem_plan(costs, 2, CEMConfig(iterations=10, horizon=4), gen(seed))
    assert best.shape == (4, 2)
    assert (best - target).abs().max() < 0.08
    assert len(calls) == 10 and all(c == (200, 4, 2) for c in calls)
    assert info.best_cost == pytest.approx(float(costs(best[None])[0]), rel=1e-5)
    assert info.best_cost < 0.02 < info.best_per_iteration[0]
    assert all(b <= a + 1e-7 for a, b in zip(info.best_per_iteration, info.best_per_iteration[1:]))


def test_cem_respects_bounds_and_reaches_the_boundary_optimum():
    """The optimum lies outside the box: every candidate stays inside and the plan ends
    on the boundary next to it."""
    cfg = CEMConfig(iterations=6, horizon=3, action_low=-0.5, action_high=0.25)
    target = torch.tensor([[2.0, -2.0], [0.0, 0.1], [-3.0, 3.0]])
    seen = []

    def costs(actions):
        seen.append(actions.clone())
        return ((actions - target) ** 2).sum((1, 2))

    best, _ = cem_plan(costs, 2, cfg, gen(3), init_mean=torch.full((3, 2), 5.0))
    everything = torch.cat(seen)
    assert everything.min() >= -0.5 and everything.max() <= 0.25
    assert best.min() >= -0.5 and best.max() <= 0.25
    expected = target.clamp(-0.5, 0.25)
    assert (best - expected).abs().max() < 0.05


def test_cem_config_and_cost_shape_errors():
    with pytest.raises(ValueError, match="elites"):
        CEMConfig(candidates=10, elites=20)
    with pytest.raises(ValueError, match="action_low < action_high"):
        CEMConfig(action_low=1.0, action_high=-1.0)
    with pytest.raises(ValueError, match=r"costs \[K=200\]"):
        cem_plan(lambda a: a.sum(-1), 2, CEMConfig(horizon=3), gen())
    with pytest.raises(ValueError, match="init_mean"):
        cem_plan(lambda a: a.sum((1, 2)), 2, CEMConfig(horizon=3), gen(), init_mean=torch.zeros(4, 2))


def test_cem_population_decays_to_twice_the_elites():
    """iCEM's decaying population: 100, 50, 25 candidates, then the floor of 2 × 12 elites;
    the evaluations counted are the ones scored."""
    cfg = CEMConfig(iterations=4, candidates=100, elites=12, horizon=3, population_decay=2.0)
    sizes = []
    _, info = cem_plan(lambda a: sizes.append(a.shape[0]) or (a ** 2).sum((1, 2)), 2, cfg, gen())
    assert sizes == [100, 50, 25, 24] and info.evaluations == 199 == cfg.evaluations()
    with pytest.raises(ValueError, match="population_decay"):
        CEMConfig(population_decay=0.5)


def test_kept_elites_keep_their_costs_without_rescoring():
    """With a deterministic cost, scoring the kept elites again changes nothing: without
    rescoring CEM finds the same plan through the same iterations while scoring only the
    fresh candidates after the first iteration (60, then 30 less 8 kept)."""
    def quadratic(actions):
        sizes.append(actions.shape[0])
        return ((actions - 0.3) ** 2).sum((1, 2))

    found = {}
    for rescore in (True, False):
        sizes = []
        cfg = CEMConfig(iterations=3, candidates=60, elites=8, horizon=4, population_decay=2.0,
                        rescore_kept_elites=rescore)
        found[rescore] = cem_plan(quadratic, 2, cfg, gen(3))
        assert found[rescore][1].evaluations == sum(sizes) == cfg.evaluations()   # what it scored
    assert sizes == [60, 22, 8]          # populations 60, 30, 16 (floor 2 × 8), less the 8 kept
    torch.testing.assert_close(found[True][0], found[False][0], rtol=0, atol=0)
    assert found[True][1].best_per_iteration == found[False][1].best_per_iteration
    assert "kept elites not scored again" in PlanOptimizer("cem", cfg).describe()


def test_carried_elites_are_scored_first_and_a_good_one_survives():
    """A narrow optimum far from the sampling mean: fresh samples (std 0.05 around 0) never
    come near it, so only a carried elite can. Carried into the next call (shifted by the
    two executed steps, zero-padded) it is among the first iteration's candidates, and the
    plan found is that elite; without carrying the plan stays far from it."""
    target = torch.tensor([[0.9, -0.9], [0.9, -0.9], [0.0, 0.0], [0.0, 0.0]])

    def costs(actions):
        seen.append(actions.clone())
        return ((actions - target) ** 2).sum((1, 2))

    found = torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.9, -0.9], [0.9, -0.9]])   # the target, two steps early
    previous = Planned(actions=torch.zeros(4, 2), best_cost=0.0,
                       elites=torch.stack([found, torch.full((4, 2), 0.3)]))
    for carry in (True, False):
        seen = []
        optimizer = cem(iterations=2, candidates=30, elites=4, horizon=4, init_std=0.05, carry_elites=carry)
        planned = optimizer.optimize(costs, 2, gen(1), previous=previous, executed=2)
        shifted = torch.cat([found[2:], torch.zeros(2, 2)])
        if carry:
            torch.testing.assert_close(seen[0][0], shifted, rtol=0, atol=0)
            torch.testing.assert_close(planned.actions, shifted, rtol=0, atol=0)
            assert planned.best_cost == pytest.approx(0.0, abs=1e-12)
        else:
            assert (planned.actions - target).abs().max() > 0.5
        assert planned.elites.shape == (4, 4, 2)


@pytest.mark.parametrize("seed", [0, 1])
def test_mppi_step_is_the_closed_form_weighted_mean_and_iterations_converge(seed):
    """For a quadratic cost c(a) = Σ w (a − t)², samples a ~ N(m, σ²) weighted by
    exp(−c/λ) average to the product of the two Gaussians' means,
    (m/σ² + 2wt/λ) / (1/σ² + 2w/λ): one MPPI step with many samples lands there (Monte
    Carlo error aside). Iterated with a cooler temperature, the mean approaches t, and the
    best cost falls; every sample stays in the box."""
    target = torch.rand(4, 2, generator=gen(10 + seed)) * 1.6 - 0.8
    weight = torch.tensor([1.0, 4.0])
    seen = []

    def costs(actions):
        seen.append(actions.clone())
        return (weight * (actions - target) ** 2).sum((1, 2))

    sigma, lam = 0.3, 0.5
    step = MPPIConfig(iterations=1, samples=20000, horizon=4, std=sigma, noise_smoothing=0.0, temperature=lam)
    plan, info = mppi_plan(costs, 2, step, gen(seed))
    k = 2 * weight / lam
    torch.testing.assert_close(plan, k * target / (1 / sigma**2 + k), rtol=0, atol=0.04)
    seen.clear()
    iterated = MPPIConfig(iterations=10, horizon=4, std=sigma, noise_smoothing=0.0, temperature=0.05)
    plan, info = mppi_plan(costs, 2, iterated, gen(seed))
    assert (plan - target).abs().max() < min(0.2, 0.3 * float(target.abs().max()))
    assert info.evaluations == 10 * 200 and len(seen) == 10 and all(x.shape == (200, 4, 2) for x in seen)
    assert torch.cat(seen).abs().max() <= 1
    assert info.best_per_iteration[-1] < 0.2 * info.best_per_iteration[0]
    assert all(1 <= n <= 200 for n in info.effective_samples)

    def lag_correlation(smoothing):
        first = []
        mppi_plan(lambda a: first.append(a) or a.sum((1, 2)) * 0, 1,
                  MPPIConfig(horizon=6, noise_smoothing=smoothing, std=0.2), gen(3))
        steps = first[0][1:, :, 0]                                                 # drop the mean's own row
        return float(torch.corrcoef(torch.stack([steps[:, 2], steps[:, 3]]))[0, 1])

    assert lag_correlation(0.8) > 0.5 and abs(lag_correlation(0.0)) < 0.2
    with pytest.raises(ValueError, match="temperature"):
        MPPIConfig(temperature=0)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        PlanOptimizer.choose("adam")


# -------------------------------------------------------------------------- costs
def test_pixel_distance_to_goal():
    frames = torch.rand(5, 3, 3, 8, 8, generator=gen(1))
    goal = torch.rand(3, 8, 8, generator=gen(2))
    per_frame = ((frames - goal) ** 2).mean(dim=(2, 3, 4))
    torch.testing.assert_close(pixel_distance_to_goal(frames, goal), per_frame[:, -1])
    torch.testing.assert_close(pixel_distance_to_goal(frames, goal, "sum"), per_frame.sum(1))
    assert pixel_distance_to_goal(goal[None, None].expand(2, 3, 3, 8, 8), goal).abs().max() == 0
    with pytest.raises(ValueError, match="does not match"):
        pixel_distance_to_goal(frames, goal[:, :4])


def test_goal_image_costs_are_zero_at_the_goal_and_rise_away_from_it():
    """The pushing world's goal image puts object 0 on the goal (the tracker finds it there);
    both goal-image costs are zero for that very frame and larger for the start frame."""
    env = started(11)
    goal_frame = env.goal_image()
    found = locate_color(goal_frame[None], env.state.object_color[:, 0], 0.1, window=0.25)[0]
    assert (found - env.goal[0]).norm() < 2 * PIXEL
    for metric in ("mse", "ssim"):
        cost = GoalImageCost(metric)
        cost.reset(env)
        frames = torch.stack([torch.stack([env.observe(), goal_frame]),
                              torch.stack([goal_frame, env.observe()])]).float() / 255      # [2, T=2, C, H, W]
        c = cost(frames, torch.zeros(2, 2, 2))           # [at the goal at the end, at the start at the end]
        assert float(c[0]) == pytest.approx(0.0, abs=1e-6) and float(c[1]) > 1e-3, (metric, c)
    with pytest.raises(ValueError, match="mse, ssim"):
        GoalImageCost("l1")


def test_color_tracker_finds_rendered_objects():
    """On 200 rendered scenes object 0 (its own colour) and the gripper (its dark inside)
    are found within one pixel in the median and 1.6 pixels in 95 % of scenes (the body
    is drawn 0.35 px up-left of its centre, and the arm or a shadow may cover a bit)."""
    state = SIM.reset(200, gen(3))
    frames = SIM.render(state)
    cost = PushCostConfig()
    obj = locate_color(frames, state.object_color[:, 0], cost.color_temperature, window=cost.window)
    err = (obj - state.object_pos[:, 0]).norm(dim=-1)
    assert err.median() < PIXEL and err.quantile(0.95) < 1.6 * PIXEL
    grip = locate_color(frames, torch.tensor(GRIPPER_INNER), cost.gripper_temperature, window=cost.window)
    gerr = (grip - state.gripper_pos).norm(dim=-1)
    assert gerr.median() < PIXEL and gerr.quantile(0.95) < 1.6 * PIXEL
    # starting from a prior 0.2 off (where the object was a few steps ago) changes little
    off = state.object_pos[:, 0] + torch.tensor([0.2, -0.1])
    moved = locate_color(frames, state.object_color[:, 0], cost.color_temperature, prior=off, window=cost.window)
    assert (moved - state.object_pos[:, 0]).norm(dim=-1).median() < PIXEL
    # a colour that is nowhere: the prior wins
    far = locate_color(frames[:4], torch.tensor([0.0, 1.0, 1.0]) * 5, 0.05, prior=torch.tensor([0.3, -0.2]))
    torch.testing.assert_close(far, torch.tensor([[0.3, -0.2]]).expand(4, 2), rtol=0, atol=1e-4)


def test_pusher_object_cost_and_its_frame_version_agree_on_simulator_frames():
    state = SIM.reset(64, gen(4))
    goal = SIM.sample_goal(state, gen(5))
    truth = pusher_object_cost(state.object_pos[:, 0], goal, state.gripper_pos, SIM.cfg)
    frames = SIM.render(state).float()[:, None] / 255            # (N, T=1, 3, H, W)
    seen = frame_pusher_cost(frames, goal, state.object_color[:, 0], state.object_pos[:, 0], state.gripper_pos,
                             SIM.cfg)
    # costs are in table units; the trackers are within ~a pixel
    assert (seen - truth).abs().median() < 2 * PIXEL
    # the distance term: object at the goal, gripper at the push point -> zero cost
    o = torch.tensor([[0.2, 0.1]])
    g = torch.tensor([[0.2 - SIM.cfg.object_radius - SIM.cfg.gripper_radius - 0.02, 0.1]])
    assert pusher_object_cost(o, torch.tensor([0.6, 0.1]), g, SIM.cfg)[0] == pytest.approx(0.4, abs=1e-5)
    farther = pusher_object_cost(o, torch.tensor([0.6, 0.1]), g + torch.tensor([0.0, 0.5]), SIM.cfg)[0]
    assert farther == pytest.approx(0.4 + 0.5 * 0.5, abs=1e-5)


def test_a_predicted_frame_that_loses_the_object_costs_more_by_the_share_lost():
    import dataclasses

    state = SIM.reset(8, gen(6))
    goal = SIM.sample_goal(state, gen(7))
    color, cost = state.object_color[:, 0], PushCostConfig(lost_penalty=0.3)
    frames = SIM.render(state).float()[:, None] / 255                         # (N, 1, 3, H, W)
    gone = dataclasses.replace(state, object_active=state.object_active.clone())
    gone.object_active[:, 0] = False                                          # object 0 not drawn
    erased = SIM.render(gone).float()[:, None] / 255
    observed = locate_color(frames[:, 0], color, cost.color_temperature, with_mass=True)[1]
    # about the disc's area in pixels (radius r − 1.2 px inside a darker rim)
    inner = torch.pi * (SIM.cfg.object_radius / PIXEL - 1.2) ** 2
    assert ((observed / inner - 1).abs() < 0.25).all(), (observed, inner)

    def costs(f, mass):
        return frame_pusher_cost(f, goal, color, state.object_pos[:, 0], state.gripper_pos, SIM.cfg, cost,
                                 object_mass=mass)

    torch.testing.assert_close(costs(frames, observed), costs(frames, None))    # nothing lost: no penalty
    added = costs(erased, observed) - costs(erased, None)
    lost = 1 - locate_color(erased[:, 0], color, cost.color_temperature, with_mass=True)[1] / observed
    torch.testing.assert_close(added, 0.3 * lost)
    assert (lost > 0.9).all(), lost


def test_running_push_cost_weighs_every_planned_step_and_its_frame_version_agrees():
    """``cost.running = w``: (1 − w) × the end's cost + w × the mean over the plan's steps. A push
    straight at the goal (no shaping) from 0.6 away in steps of 0.1: end 0.2, mean 0.35."""
    path = torch.tensor([0.5, 0.4, 0.3, 0.2])[None, :, None] * torch.tensor([1.0, 0.0])   # (1, T=4, 2)
    goal = torch.zeros(2)
    for w, expected in ((0.0, 0.2), (1.0, 0.35), (0.4, 0.6 * 0.2 + 0.4 * 0.35)):
        cost = PushCostConfig(shaping=0.0, running=w)
        assert pusher_path_cost(path, goal, None, SIM.cfg, cost)[0] == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="running must be in"):
        PushCostConfig(running=1.5)
    # on simulator frames of a real push, the frame cost tracks the object through every frame
    # (each frame's prior: the last one's position) and agrees with the true-state cost
    state = SIM.reset(16, gen(8))
    goal = SIM.sample_goal(state, gen(9))
    actions = torch.rand(16, 8, 2, generator=gen(10)) * 2 - 1
    grip, objs, _ = SIM.simulate(state, actions)
    frames, _ = SIM.rollout(state, actions)
    frames = frames[:, 1:].float() / 255                                            # (N, T, 3, H, W)
    cost = PushCostConfig(running=0.5)
    truth = pusher_path_cost(objs[:, 1:, 0], goal, grip[:, 1:], SIM.cfg, cost)
    seen = frame_pusher_cost(frames, goal, state.object_color[:, 0], state.object_pos[:, 0], state.gripper_pos,
                             SIM.cfg, cost, gripper_final=grip[:, 1:])
    assert (seen - truth).abs().median() < 2 * PIXEL
    with pytest.raises(ValueError, match="gripper at every step"):
        frame_pusher_cost(frames, goal, state.object_color[:, 0], state.object_pos[:, 0], state.gripper_pos,
                          SIM.cfg, cost, gripper_final=grip[:, -1])


def test_a_gripper_guess_is_corrected_by_the_frames_with_kinematics_then_frames():
    """Dead reckoning that an object made wrong (the kinematic guess 0.22 off where the frame
    shows the gripper): "kinematics" scores the guess, "kinematics_then_frames" finds the
    gripper the frame shows and scores what the true state would."""
    state = SIM.reset(32, gen(11))
    goal = SIM.sample_goal(state, gen(12))
    frames = SIM.render(state).float()[:, None] / 255                          # (N, 1, 3, H, W)
    truth = pusher_object_cost(state.object_pos[:, 0], goal, state.gripper_pos, SIM.cfg)
    guess = state.gripper_pos + torch.tensor([0.2, -0.1])

    def costs(source):
        return frame_pusher_cost(frames, goal, state.object_color[:, 0], state.object_pos[:, 0], state.gripper_pos,
                                 SIM.cfg, PushCostConfig(gripper_source=source), gripper_final=guess)

    refined, guessed = (costs("kinematics_then_frames") - truth).abs(), (costs("kinematics") - truth).abs()
    # measured medians: 0.5 px against 2.3 px (the guess moves the shaping term by up to 0.5 · 0.22 = 3.6 px)
    assert refined.median() < PIXEL and guessed.median() > 1.5 * PIXEL
    assert (refined < guessed).float().mean() > 0.8
    with pytest.raises(ValueError, match="gripper_source must be one of"):
        PushCostConfig(gripper_source="camera")


def test_gripper_kinematics_match_the_simulator_when_nothing_is_touched():
    """Dead reckoning (position + Σ action · max_step, clamped to the table) is where the
    simulator puts the gripper whenever no object was in the way."""
    state = SIM.reset(64, gen(6))
    actions = torch.rand(64, 6, 2, generator=gen(7)) * 2.4 - 1.2   # some beyond [-1, 1]: clamped
    grip, objs, _ = SIM.simulate(state, actions)
    guess = torch.stack([gripper_kinematics(state.gripper_pos[i], actions[i:i + 1], SIM.cfg)[0] for i in range(64)])
    untouched = (objs[:, -1] - objs[:, 0]).norm(dim=-1).amax(-1) == 0
    assert untouched.sum() > 20
    torch.testing.assert_close(guess[untouched], grip[untouched, -1], rtol=0, atol=1e-5)
    # every step's position, as the running cost needs them
    steps = torch.stack([gripper_kinematics(state.gripper_pos[i], actions[i:i + 1], SIM.cfg, path=True)[0]
                         for i in range(64)])
    torch.testing.assert_close(steps[untouched], grip[untouched, 1:], rtol=0, atol=1e-5)
    torch.testing.assert_close(steps[:, -1], guess, rtol=0, atol=0)


# ------------------------------------------------------------------ closed loop
def test_true_simulator_cem_beats_random_actions(tmp_path):
    """Four fixed episodes: CEM with the true simulator brings object 0 within one object
    radius of the goal in at least 3 of them and halves the random baseline's mean final
    distance (random actions rarely even touch the object)."""
    cfg = PlanEvalConfig(episodes=4, steps=30, methods=("random", "true_sim"), render_episodes=1,
                         cem=CEMConfig(iterations=2, candidates=100, elites=10, horizon=8))
    results = evaluate_planning(WORLD, cfg, env=PusherEnv(SIM), out_dir=tmp_path, log=lambda s: None)
    rnd, cem = results["methods"]["random"], results["methods"]["true_sim"]
    assert cem["success_rate"] >= 0.75
    assert cem["mean_final_distance"] < 0.5 * rnd["mean_final_distance"]
    assert results["threshold"] == SIM.cfg.object_radius
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["methods"]["true_sim"]["final_distances"] == cem["final_distances"]
    assert saved["video_rows"] == ["true_sim", "random"]      # the episode video's rows, top to bottom
    table = (tmp_path / "results.md").read_text()
    assert "planner + true simulator" in table and "random actions" in table
    from seqvae.render import read_video

    assert read_video(tmp_path / "episode_000.mp4").shape[0] == cfg.steps + 1


def test_frame_cost_path_with_a_perfect_video_model_pushes_objects(monkeypatch):
    """The learned-model path (rollouts of frames -> colour-tracker cost -> CEM) with the
    simulator's own rendered frames as the "model" reaches the goal: the frame-based cost
    is sound, so what a trained model lacks is in its predictions."""
    cfg = PlanEvalConfig(episodes=2, steps=36, replan_every=3, methods=("random", "sim_frames"), render_episodes=0,
                         cem=CEMConfig(iterations=2, candidates=50, elites=6, horizon=10))
    import seqvae.control.harness as harness
    from seqvae.threads import ThreadGovernor

    made = []   # the video model's planning calls run under one thread governor (seqvae.threads)
    monkeypatch.setattr(harness, "loop_governor", lambda device, threads: made.append(ThreadGovernor([1]))
                        or made[-1])
    results = evaluate_planning(WORLD, cfg, env=PusherEnv(SIM), log=lambda s: None)
    oracle, rnd = results["methods"]["sim_frames"], results["methods"]["random"]
    assert oracle["success_rate"] >= 0.5
    assert oracle["mean_final_distance"] < 0.4 * rnd["mean_final_distance"]
    assert len(made) == 1 and made[0].steps == 2 * 36 // 3          # one per plan: 12 per episode


def test_episodes_are_fixed_and_mpc_replans_on_schedule():
    env, again = started(episode_seed(0, 3)), started(episode_seed(0, 3))
    torch.testing.assert_close(env.state.object_pos, again.state.object_pos, rtol=0, atol=0)
    torch.testing.assert_close(env.goal, again.goal, rtol=0, atol=0)
    assert not torch.equal(started(episode_seed(0, 4)).goal, env.goal)
    s1, g1 = env.state.clone(), env.goal.clone()
    optimizer = cem(iterations=1, candidates=20, elites=4, horizon=4)
    rec = run_episode(env, TrueSimulatorModel(env), optimizer, steps=7, replan_every=3, generator=gen(),
                      record_plans=True)
    assert rec.plan_steps == [0, 3, 6]
    assert rec.frames.shape == (8, 3, 64, 64) and rec.frames.dtype == torch.uint8
    assert rec.actions.shape == (7, 2) and rec.actions.abs().max() <= 1
    assert rec.plan_frames[0].shape == (4, 3, 64, 64)
    # the true simulator's preview is what then happens (its first frame: after action 0)
    torch.testing.assert_close(rec.plan_frames[0][0], SIM.render(SIM.step(s1, rec.actions[:1]))[0].float() / 255)
    assert rec.distances[0] == pytest.approx(float(SIM.object_distance(s1, g1)[0]))
    assert rec.success == (rec.final_distance < env.success_threshold)
    with pytest.raises(ValueError, match="replan_every"):
        run_episode(started(1), None, optimizer, steps=3, replan_every=5)


@pytest.mark.parametrize("end_aware", [False, True])
def test_end_aware_plans_are_scored_where_the_episode_ends(end_aware):
    """7 steps, horizon 4, replanning at steps 0, 3, 6: end-aware planning scores the plans
    at step 6 on the one step left (the cost of where the object is when the episode ends),
    otherwise on all 4; the plan's best cost is then the true cost after its first action."""
    env = started(episode_seed(0, 3))
    state, goal = env.state.clone(), env.goal.clone()
    seen = []

    class Recording(TrueSimulatorModel):
        def costs(self, actions):
            seen.append(actions.shape[1])
            return super().costs(actions)

    rec = run_episode(env, Recording(env), cem(iterations=2, candidates=20, elites=4, horizon=4), steps=7,
                      replan_every=3, generator=gen(), record_plans=True, end_aware=end_aware)
    assert seen == [4] * 4 + ([1, 1] if end_aware else [4, 4])
    grip, objs, _ = SIM.simulate(state, rec.actions[None])           # the executed episode, replayed
    final_cost = float(pusher_object_cost(objs[:, -1, 0], goal[0], grip[:, -1], SIM.cfg)[0])
    assert float(objs[0, -1, 0].sub(goal[0]).norm()) == pytest.approx(rec.final_distance, abs=1e-6)
    if end_aware:
        assert rec.plan_costs[-1] == pytest.approx(final_cost, abs=1e-5)
    else:   # scored 4 steps ahead, 3 of them beyond the end of the episode
        assert rec.plan_costs[-1] != pytest.approx(final_cost, abs=1e-5)


def tiny_action_model():
    from torch import nn

    from seqvae.data.spec import DataSpec
    from seqvae.likelihoods.gaussian import OptimalSigmaGaussian
    from seqvae.models.svg import SVGConfig, build_svg

    torch.manual_seed(0)
    cfg = SVGConfig(backbone="dcgan64", width=16, g_dim=32, z_dim=4, rnn_size=32, n_past=2, n_future=3,
                    action_conditioned=True)
    model = build_svg(cfg, OptimalSigmaGaussian(), DataSpec(3, 64, 64, 5, 2))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model({"frames": torch.rand(4, 5, 3, 64, 64, generator=gen(9)), "actions": torch.randn(4, 5, 2)}, gen(7))
    return model.eval()


def test_video_model_planner_plans_from_frames_only():
    """The video-model planner keeps n_ctx frames (the first repeated, zero actions), its
    costs are the frame cost of its own rollouts (reproducible per episode seed), and an
    MPC episode with it runs and keeps actions in bounds."""
    model = tiny_action_model()
    env = started(episode_seed(0, 1))
    start = env.state.clone()
    lm = VideoModelPlanner(model, PushTrackerCost(env), samples=2, seed=0)
    lm.reset(env, seed=5)
    assert len(lm.frames) == 2 and torch.equal(lm.frames[0], lm.frames[1])
    assert lm.actions[0].abs().max() == 0
    torch.testing.assert_close(lm.cost.object_prior, start.object_pos[0, 0], rtol=0, atol=2 * PIXEL)
    acts = torch.rand(6, 3, 2, generator=gen(1)) * 2 - 1
    c1 = lm.costs(acts)
    lm.reset(env, seed=5)
    c2 = lm.costs(acts)
    assert c1.shape == (6,) and torch.isfinite(c1).all()
    torch.testing.assert_close(c1, c2, rtol=0, atol=0)
    env.step(acts[0, 0])
    lm.observe(env, acts[0, 0])
    assert not torch.equal(lm.frames[0], lm.frames[1])       # the gripper moved
    torch.testing.assert_close(lm.actions[0], acts[0, 0])
    env.reset(episode_seed(0, 1))
    rec = run_episode(env, lm, cem(iterations=1, candidates=8, elites=2, horizon=3), steps=2, generator=gen(),
                      record_plans=True, episode_seed=1)
    assert rec.actions.abs().max() <= 1 and len(rec.plan_frames) == 2
    with pytest.raises(ValueError, match="action-conditioned"):
        VideoModelPlanner(_action_free(), PushTrackerCost(env))


def test_video_model_planner_with_prior_means_is_deterministic_and_is_the_zero_noise_rollout():
    """latent="mean": every latent is its distribution's mean, so the costs do not depend on
    the planner's seed and equal the cost of rollouts given zero noise; drawn latents give
    other costs (the tiny model's prior is not a point mass: about 1e-3 apart here)."""
    from seqvae.control.rollout import rollout

    model = tiny_action_model()
    env = started(episode_seed(0, 1))
    acts = torch.rand(6, 3, 2, generator=gen(1)) * 2 - 1
    costs = {}
    for latent, seed in [("mean", 5), ("mean", 6), ("sample", 5)]:
        lm = VideoModelPlanner(model, PushTrackerCost(env), seed=0, latent=latent)
        lm.reset(env, seed=seed)
        costs[latent, seed] = lm.costs(acts)
    torch.testing.assert_close(costs["mean", 5], costs["mean", 6], rtol=0, atol=0)
    assert (costs["mean", 5] != costs["sample", 5]).all()
    ctx, ctx_acts = lm._context()
    zero = torch.zeros(1, 1, lm.n_ctx - 1 + 3, model.z_dim)
    direct = rollout(lm.model, ctx, acts[None], 1, generator=None, context_actions=ctx_acts, noise=zero,
                     cost_fn=lambda f, i: lm.cost(f, acts[i[:, 1]]), return_frames=False)
    torch.testing.assert_close(costs["mean", 5], direct.costs[0, :, 0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="samples must be 1"):
        VideoModelPlanner(model, PushTrackerCost(env), samples=2, latent="mean")
    with pytest.raises(ValueError, match="latent must be one of"):
        VideoModelPlanner(model, PushTrackerCost(env), latent="median")
    with pytest.raises(ValueError, match="plan.samples=1"):
        PlanEvalConfig(latent="mean", samples=3)


def test_video_model_planner_can_score_a_whole_plan_on_the_same_latents():
    """redraw_latents=False: the latents are drawn once per situation, as the first scoring
    call would draw them, and every later call there reuses them (the same candidates cost
    the same); by default each call draws anew. A new observation draws new latents."""
    model = tiny_action_model()
    env = started(episode_seed(0, 1))
    acts = torch.rand(6, 3, 2, generator=gen(1)) * 2 - 1
    calls = {}
    for redraw in (True, False):
        lm = VideoModelPlanner(model, PushTrackerCost(env), samples=2, seed=0, redraw_latents=redraw)
        lm.reset(env, seed=5)
        calls[redraw] = [lm.costs(acts), lm.costs(acts)]
        if not redraw:
            drawn = lm._latents.clone()
            env.step(acts[0, 0])
            lm.observe(env, acts[0, 0])
            lm.costs(acts)
            assert (lm._latents - drawn).abs().min() > 0
    torch.testing.assert_close(calls[False][0], calls[True][0], rtol=0, atol=0)   # the same first draw
    torch.testing.assert_close(calls[False][1], calls[False][0], rtol=0, atol=0)
    assert (calls[True][1] - calls[True][0]).abs().max() > 1e-4


def _action_free():
    from seqvae.data.spec import DataSpec
    from seqvae.likelihoods.gaussian import OptimalSigmaGaussian
    from seqvae.models.svg import SVGConfig, build_svg

    cfg = SVGConfig(backbone="dcgan64", width=16, g_dim=32, z_dim=4, rnn_size=32, n_past=2, n_future=3)
    return build_svg(cfg, OptimalSigmaGaussian(), DataSpec(3, 64, 64, 5, 0))


# ------------------------------------------------------------------------ commands
def run_cli(argv: list[str]):
    from seqvae.cli import parse

    args = parse(argv)
    return args.func(args)


def test_plan_command_without_a_model(tmp_path, capsys):
    settings = ["plan.methods=[random, true_sim, learned]", "plan.episodes=2", "plan.steps=3", "plan.cem.horizon=3",
                "plan.cem.candidates=10", "plan.cem.elites=2", "plan.cem.iterations=1", "plan.render_episodes=0"]
    results = run_cli(["plan", *settings, f"out_dir={tmp_path}"])
    out = capsys.readouterr().out
    assert "skipping the learned-model planner" in out and "| planner + true simulator (state cost) | 2 |" in out
    # the command runs exactly the library's evaluation of the config it was given ...
    from seqvae.cli.plan import load_plan_config

    cfg = load_plan_config(None, [*settings, "plan.methods=[random, true_sim]"])
    direct = evaluate_planning(WORLD, cfg.plan, log=lambda _: None)
    for name in ("random", "true_sim"):
        assert results["methods"][name]["final_distances"] == direct["methods"][name]["final_distances"]
    # ... and records it: the saved config reloads to the same settings
    again = load_plan_config(str(tmp_path / "config.yaml"), [])
    assert again.plan == cfg.plan and (tmp_path / "results.md").is_file()
    # typed settings: a misspelt key is refused with a suggestion, exit status 2
    from seqvae.cli import main

    assert main(["plan", "plan.episodse=3", f"out_dir={tmp_path / 'x'}"]) == 2
    assert "Did you mean 'plan.episodes'" in capsys.readouterr().err


def test_render_command(tmp_path):
    videos = (np.random.default_rng(0).random((3, 4, 3, 16, 16)) * 255).astype(np.uint8)
    np.savez(tmp_path / "v.npz", frames=videos, labels=np.array(["a", "b", "c"]))
    run_cli(["render", str(tmp_path / "v.npz"), "--out", str(tmp_path / "v.gif"), "--context", "2", "--scale", "1"])
    from seqvae.render import read_video

    gif = read_video(tmp_path / "v.gif")
    assert gif.shape[0] == 4
    # a single video [T, C, H, W] and a rollout [K, S, T, C, H, W] with its context
    np.savez(tmp_path / "one.npz", frames=videos[0].astype(np.float32) / 255)
    run_cli(["render", str(tmp_path / "one.npz"), "--out", str(tmp_path / "one.png")])
    assert (tmp_path / "one.png").is_file()
    np.savez(tmp_path / "ro.npz", frames=videos[:2].reshape(1, 2, 4, 3, 16, 16), context=videos[0, :2])
    run_cli(["render", str(tmp_path / "ro.npz"), "--out", str(tmp_path / "ro.mp4")])
    assert read_video(tmp_path / "ro.mp4").shape[0] == 6      # 2 context + 4 predicted
    # clear errors
    with pytest.raises(FileNotFoundError, match="no such file"):
        run_cli(["render", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "x.mp4")])
    np.savez(tmp_path / "bad.npz", frames=np.zeros((4, 16, 16)))
    with pytest.raises(ValueError, match=r"frames must be \[N, T, C, H, W\]"):
        run_cli(["render", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "x.mp4")])
    np.savez(tmp_path / "nokey.npz", video=videos)
    with pytest.raises(ValueError, match="no 'frames' array"):
        run_cli(["render", str(tmp_path / "nokey.npz"), "--out", str(tmp_path / "x.mp4")])
    with pytest.raises(ValueError, match=r"\.mp4, \.gif or \.png"):
        run_cli(["render", str(tmp_path / "v.npz"), "--out", str(tmp_path / "x.avi")])
