"""The procedural pushing world (seqvae.worlds.pusher) and its data set."""
from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch
from torch.utils.data import DataLoader

from seqvae.registry import DATASETS
from seqvae.worlds.pusher.dataset import PusherDataConfig, PusherDataset, item_seed
from seqvae.worlds.pusher.policy import episode_uniforms, sample_episodes
from seqvae.worlds.pusher.sim import PusherSim
from seqvae.worlds.pusher.world import GRIPPER_INNER, PusherConfig, PusherState

CFG = PusherConfig()




def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_state(gripper, objects, active=None) -> PusherState:
    """One environment with hand-placed bodies (appearance from a seeded reset)."""
    sim = PusherSim(CFG)
    base = sim.reset(1, gen(0))
    objs = torch.tensor([objects], dtype=torch.float32)
    act = torch.tensor([active if active is not None else [True] * len(objects)])
    return dataclasses.replace(base, gripper_pos=torch.tensor([gripper], dtype=torch.float32),
                               object_pos=objs, object_active=act,
                               object_color=base.object_color[:, :len(objects)])


def gaps(cfg: PusherConfig, grip: torch.Tensor, objs: torch.Tensor, active: torch.Tensor):
    """Signed clearances (negative = overlap): gripper square to discs ``[..., K]`` and
    between discs ``[..., K, K]`` (inactive pairs and the diagonal get +inf)."""
    d = objs - grip[..., None, :]
    e = d - d.clamp(-cfg.gripper_radius, cfg.gripper_radius)
    inside = (d.abs() <= cfg.gripper_radius).all(-1)
    g = torch.where(inside, torch.full_like(e[..., 0], -1.0), e.norm(dim=-1) - cfg.object_radius)
    g = torch.where(active, g, torch.full_like(g, float("inf")))
    oo = (objs[..., :, None, :] - objs[..., None, :, :]).norm(dim=-1) - 2 * cfg.object_radius
    K = objs.shape[-2]
    pair = active[..., :, None] & active[..., None, :] & ~torch.eye(K, dtype=torch.bool)
    return g, torch.where(pair, oo, torch.full_like(oo, float("inf")))


def project(p) -> tuple[int, int]:
    """Pixel (row, col) holding table point p = (x, y)."""
    S = CFG.image_size
    return int((p[1] + 1) / 2 * S), int((p[0] + 1) / 2 * S)


# ------------------------------------------------------------------------ dynamics
def test_action_moves_gripper_by_commanded_step_and_walls_bound_it():
    sim = PusherSim(CFG)
    state = make_state([0.0, 0.0], [[0.7, 0.7], [-0.7, 0.7], [0.7, -0.7]])
    nxt = sim.step(state, torch.tensor([[0.5, -1.0]]))
    expected = torch.tensor([0.5, -1.0]) * CFG.max_step
    assert torch.allclose(nxt.gripper_pos[0], expected, atol=1e-7)
    # Components beyond [-1, 1] are clamped.
    nxt = sim.step(state, torch.tensor([[3.0, -7.0]]))
    assert torch.allclose(nxt.gripper_pos[0], torch.tensor([1.0, -1.0]) * CFG.max_step, atol=1e-7)
    # A wall stops the gripper at the table edge.
    limit = 1.0 - CFG.gripper_radius
    state = make_state([limit - 0.01, 0.0], [[-0.5, 0.5]])
    for _ in range(3):
        state = sim.step(state, torch.tensor([[1.0, 0.0]]))
    assert state.gripper_pos[0, 0].item() == pytest.approx(limit, abs=1e-6)
    assert state.gripper_pos[0, 1].item() == pytest.approx(0.0, abs=1e-7)


def test_object_in_path_is_pushed_and_far_object_stays():
    sim = PusherSim(CFG)
    touching = CFG.gripper_radius + CFG.object_radius + 0.005
    state = make_state([-0.4, 0.1], [[-0.4 + touching, 0.1], [-0.5, -0.7]])
    start = state
    for _ in range(5):
        state = sim.step(state, torch.tensor([[1.0, 0.0]]))
    travelled = 5 * CFG.max_step
    assert state.gripper_pos[0, 0].item() == pytest.approx(-0.4 + travelled, abs=1e-5)
    moved = state.object_pos[0, 0] - start.object_pos[0, 0]
    assert moved[0].item() == pytest.approx(travelled - 0.005, abs=1e-4)  # kept just in front
    assert moved[1].item() == pytest.approx(0.0, abs=1e-6)               # along the contact normal
    assert torch.equal(state.object_pos[0, 1], start.object_pos[0, 1])


def test_objects_push_each_other_and_walls_block_the_gripper():
    sim = PusherSim(CFG)
    r, h = CFG.object_radius, CFG.gripper_radius
    # A row: gripper, object 0, object 1 (touching) -> pushing moves both.
    x0 = -0.6 + h + r + 0.001
    state = make_state([-0.6, 0.0], [[x0, 0.0], [x0 + 2 * r + 0.001, 0.0]])
    start = state
    for _ in range(4):
        state = sim.step(state, torch.tensor([[1.0, 0.0]]))
    assert (state.object_pos[0, :, 0] - start.object_pos[0, :, 0] > 0.25).all()
    # Against the right wall the object cannot move: the gripper is held back.
    limit = 1.0 - r
    state = make_state([limit - r - h - 0.001, 0.3], [[limit, 0.3]])
    for _ in range(4):
        state = sim.step(state, torch.tensor([[1.0, 0.0]]))
    assert state.object_pos[0, 0, 0].item() == pytest.approx(limit, abs=1e-6)
    g, _ = gaps(CFG, state.gripper_pos, state.object_pos, state.object_active)
    assert g.min().item() > -1e-5


def test_random_rollouts_keep_bodies_apart_and_on_the_table():
    sim = PusherSim(CFG)
    state = sim.reset(64, gen(3))
    actions = torch.rand(64, 40, 2, generator=gen(4)) * 2 - 1
    grip, objs, _ = sim.simulate(state, actions)
    active = state.object_active[:, None].expand(-1, grip.shape[1], -1)
    g, oo = gaps(CFG, grip, objs, active)
    assert g.min().item() > -1e-5          # the gripper never overlaps an object
    assert oo.min().item() > -0.01         # objects overlap by at most a third of a pixel
    assert grip.abs().max().item() <= 1 - CFG.gripper_radius + 1e-6
    assert torch.where(active[..., None], objs.abs(), 0).max().item() <= 1 - CFG.object_radius + 1e-6
    # The gripper did move objects (so this exercised contacts).
    assert ((objs[:, -1] - objs[:, 0]).norm(dim=-1) > 0.05).any()


def test_step_is_pure_and_batched_equals_per_environment():
    sim = PusherSim(CFG)
    state = sim.reset(6, gen(5))
    before = state.clone()
    action = torch.rand(6, 2, generator=gen(6)) * 2 - 1
    batched = sim.step(state, action)
    for f in dataclasses.fields(PusherState):
        assert torch.equal(getattr(state, f.name), getattr(before, f.name)), f.name
    for i in range(6):
        single = sim.step(state.index(i), action[i:i + 1])
        assert torch.equal(single.gripper_pos, batched.gripper_pos[i:i + 1])
        assert torch.equal(single.object_pos, batched.object_pos[i:i + 1])
    # repeat(): identical copies evolve identically.
    copies = sim.step(state.index(2).repeat(3), action[2:3].expand(3, 2))
    assert torch.equal(copies.object_pos, batched.object_pos[2:3].expand(3, -1, -1))


def test_reset_is_deterministic_and_bodies_start_apart():
    sim = PusherSim(CFG)
    a, b, c = sim.reset(32, gen(7)), sim.reset(32, gen(7)), sim.reset(32, gen(8))
    assert all(torch.equal(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(PusherState))
    assert not torch.equal(a.object_pos, c.object_pos)
    g, oo = gaps(CFG, a.gripper_pos, a.object_pos, a.object_active)
    assert g.min().item() > 0 and oo.min().item() > 0
    assert a.object_active[:, 0].all()
    counts = a.object_active.sum(1)
    assert counts.min().item() >= CFG.min_objects and counts.max().item() <= CFG.num_objects


# ---------------------------------------------------------------------- rendering
def test_render_draws_gripper_and_objects_where_their_positions_say():
    sim = PusherSim(CFG)
    state = make_state([-0.35, 0.4], [[0.45, -0.2], [-0.5, -0.5], [0.5, 0.6]], active=[True, True, False])
    img = sim.render(state)[0]
    assert img.dtype == torch.uint8
    inner = torch.tensor(GRIPPER_INNER) * 255
    row, col = project([-0.35, 0.4])
    assert (img[:, row, col].float() - inner).abs().max() <= 2
    for k in (0, 1):
        row, col = project(state.object_pos[0, k].tolist())
        assert (img[:, row, col].float() - state.object_color[0, k] * 255).abs().max() <= 2
    # The inactive object is not drawn.
    row, col = project([0.5, 0.6])
    assert (img[:, row, col].float() - state.object_color[0, 2] * 255).abs().max() > 20
    # Moving the gripper moves its dark pixels.
    moved = sim.render(dataclasses.replace(state, gripper_pos=torch.tensor([[0.3, 0.5]])))[0]
    row, col = project([0.3, 0.5])
    assert (moved[:, row, col].float() - inner).abs().max() <= 2
    row, col = project([-0.35, 0.4])
    assert (moved[:, row, col].float() - inner).abs().max() > 20


def test_rollout_frames_are_renders_of_the_stepped_states():
    sim = PusherSim(CFG)
    state = sim.reset(3, gen(9))
    actions = torch.rand(3, 4, 2, generator=gen(10)) * 2 - 1
    frames, final = sim.rollout(state, actions)
    assert frames.shape == (3, 5, 3, CFG.image_size, CFG.image_size)
    s = state
    for t in range(5):
        assert torch.equal(frames[:, t], sim.render(s))
        if t < 4:
            s = sim.step(s, actions[:, t])
    assert torch.equal(final.object_pos, s.object_pos)
    assert not torch.equal(frames[:, 0], frames[:, -1])


def test_goals_are_inside_the_table_at_a_pushable_distance():
    sim = PusherSim(CFG)
    state = sim.reset(128, gen(11))
    goal = sim.sample_goal(state, gen(12))
    assert torch.equal(goal, sim.sample_goal(state, gen(12)))
    assert goal.abs().max().item() <= 1 - CFG.object_radius
    dist = sim.object_distance(state, goal)
    assert torch.allclose(dist, (state.object_pos[:, 0] - goal).norm(dim=-1))
    diameters = dist / (2 * CFG.object_radius)
    assert diameters.min().item() >= CFG.goal_min_distance - 1e-4
    assert diameters.max().item() <= CFG.goal_max_distance + 1e-4
    # The goal ring is drawn on request, and only there.
    plain, marked = sim.render(state.index(slice(0, 8))), sim.render(state.index(slice(0, 8)), goal=goal[:8])
    changed = (plain != marked).any(1)                                   # [8, H, W]
    assert changed.flatten(1).any(1).all()
    rows, cols = changed.nonzero()[:, 1:].float().unbind(1)
    ys, xs = (rows + 0.5) / CFG.image_size * 2 - 1, (cols + 0.5) / CFG.image_size * 2 - 1
    which = changed.nonzero()[:, 0]
    off = torch.stack([xs, ys], 1) - goal[which]
    assert off.norm(dim=1).max().item() <= CFG.object_radius + 2 * CFG.pixel


# ----------------------------------------------------------------------- data set
def small(**kw) -> PusherDataConfig:
    return PusherDataConfig(seq_len=kw.pop("seq_len", 10), num_train=1000, num_val=64, num_test=64, **kw)


def test_items_are_a_pure_function_of_seed_split_index():
    a, b = PusherDataset(small(), "train"), PusherDataset(small(), "train")
    x, y = a[17], b[17]
    assert x.keys() == y.keys() == {"frames", "actions", "gripper_pos", "object_pos", "object_mask",
                                  "object_color"}
    assert all(torch.equal(x[k], y[k]) for k in x)
    assert not torch.equal(a[18]["frames"], x["frames"])
    assert not torch.equal(PusherDataset(small(seed=1), "train")[17]["frames"], x["frames"])
    # A batch is generated in one pass, bit-identical to the items one by one.
    batch = a.__getitems__([5, 2, 17])
    for item, i in zip(batch, (5, 2, 17)):
        assert all(torch.equal(item[k], a[i][k]) for k in item)


def test_full_size_item_layout():
    ds = PusherDataset(PusherDataConfig(), "val")
    item = ds[0]
    T = ds.spec.seq_len
    assert (T, ds.spec.action_dim, len(ds)) == (30, 2, 256)
    assert item["frames"].shape == (T, 3, 64, 64) and item["frames"].dtype == torch.uint8
    assert item["actions"].shape == (T, 2) and item["actions"].abs().max() <= 1
    # actions[t] moves frame t to frame t + 1: replaying them reproduces the positions.
    sim = ds.sim
    grip, objs = item["gripper_pos"], item["object_pos"]
    state = make_state(grip[0].tolist(), objs[0].tolist(), item["object_mask"].tolist())
    for t in range(T - 1):
        state = sim.step(state, item["actions"][t:t + 1])
        assert torch.equal(state.gripper_pos[0], grip[t + 1])
        assert torch.equal(state.object_pos[0], objs[t + 1])


def test_splits_do_not_overlap():
    def fingerprints(split):
        ds = PusherDataset(small(seq_len=2), split)
        return {hashlib.sha1(it["frames"].numpy().tobytes()).hexdigest() for it in ds.__getitems__(range(24))}

    train, val, test = fingerprints("train"), fingerprints("val"), fingerprints("test")
    assert len(train) == len(val) == len(test) == 24
    assert not (train & val) and not (train & test) and not (val & test)
    assert len({item_seed(0, s, i) for s in ("train", "val", "test") for i in range(1000)}) == 3000


def test_action_free_items_have_no_actions_but_the_same_video():
    with_actions = PusherDataset(small(), "test")[3]
    ds = PusherDataset(small(action_conditioned=False), "test")
    item = ds[3]
    assert "actions" not in item and ds.spec.action_dim == 0
    assert torch.equal(item["frames"], with_actions["frames"])


def test_training_windows_are_cut_from_longer_episodes_and_eval_items_start_at_the_reset():
    whole = PusherDataset(small(seq_len=30), "train")           # the same seeds simulate the same 30-step episodes
    windows = PusherDataset(small(seq_len=8, episode_len=30), "train")
    firsts = []
    for i in range(24):
        w, full = windows[i], whole[i]
        # the window's first step: where its gripper track sits in the whole episode
        first = [s for s in range(23) if torch.equal(full["gripper_pos"][s:s + 8], w["gripper_pos"])]
        assert first, f"item {i} is not a window of its episode"
        s = first[0]
        firsts.append(s)
        for key in ("frames", "actions", "object_pos"):
            assert torch.equal(w[key], full[key][s:s + 8]), key
    assert min(firsts) <= 5 and max(firsts) >= 17 and len(set(firsts)) >= 8   # offsets spread over 0 .. 22
    # Batched generation still equals items one by one (each row has its own offset).
    for item, i in zip(windows.__getitems__([3, 11, 7]), (3, 11, 7)):
        assert all(torch.equal(item[k], windows[i][k]) for k in item)
    # Val/test items are whole episodes from the reset, whatever episode_len says.
    cfg = small(seq_len=8, eval_seq_len=12, episode_len=30)
    assert torch.equal(PusherDataset(cfg, "test")[5]["frames"], PusherDataset(small(seq_len=12), "test")[5]["frames"])
    with pytest.raises(ValueError, match="episode_len"):
        PusherDataset(small(seq_len=8, episode_len=6), "train")


def test_random_policy_pushes_objects_in_most_sequences():
    sim = PusherSim(CFG)
    u = torch.rand(128, episode_uniforms(sim, 30), generator=gen(13))
    ep = sample_episodes(sim, 30, u)
    moved = ((ep.object_pos - ep.object_pos[:, :1]).norm(dim=-1).amax(1) > 0.02) & ep.start.object_active
    assert moved.any(-1).float().mean().item() >= 0.5
    # Smooth: consecutive actions are correlated.
    a = ep.actions
    assert torch.nn.functional.cosine_similarity(a[:, 1:], a[:, :-1], dim=-1).mean() > 0.5


def test_registered_and_batched_by_the_data_loader():
    cfg = DATASETS.config_class("pusher")(seq_len=6, num_val=8)
    ds = DATASETS.build(cfg, "val")
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["frames"].shape == (4, 6, 3, 64, 64)
    assert torch.equal(batch["frames"][2], ds[2]["frames"])
    with pytest.raises(IndexError):
        ds[8]
    with pytest.raises(ValueError, match="split"):
        PusherDataset(cfg, "training")


def test_texture_contrast_scales_the_table_pattern_and_zero_gives_a_plain_table():
    state = PusherSim(CFG).reset(4, gen(5))
    spread = {}
    for contrast in (1.0, 0.35, 0.0):
        table = PusherSim(dataclasses.replace(CFG, texture_contrast=contrast)).table_image(state)
        base = state.table_color[:, 0, :, None, None]
        spread[contrast] = (table - base).abs().mean().item()
        if contrast == 0.0:
            torch.testing.assert_close(table, base.expand_as(table).clamp(0, 1), rtol=0, atol=1e-6)
    assert spread[0.0] < 1e-6 < spread[0.35] < 0.5 * spread[1.0], spread
    with pytest.raises(ValueError, match="texture_contrast"):
        PusherConfig(texture_contrast=1.5)


def test_data_config_world_is_the_simulator_the_data_set_and_the_planner_use():
    from seqvae.worlds.pusher.planning import make_env

    data_cfg = PusherDataConfig(world=PusherConfig(num_objects=2, gripper_radius=0.18, object_radius=0.2, max_step=0.1,
                                                   texture_contrast=0.35, shadow_strength=0.2, tile_probability=0.5))
    world = data_cfg.world
    assert PusherDataset(data_cfg, "test").sim.cfg == world == make_env(data_cfg).sim.cfg
    assert (world.num_objects, world.gripper_radius, world.texture_contrast, world.shadow_strength,
            world.tile_probability) == (2, 0.18, 0.35, 0.2, 0.5)


def test_checkpoints_with_the_flat_pre_nesting_config_still_load(tmp_path):
    """Checkpoints written before the world's keys moved under data.world load unchanged."""
    from dataclasses import asdict

    from seqvae.build import build_model
    from seqvae.checkpoint import save_checkpoint
    from seqvae.config import RunConfig
    from seqvae.loading import load_model

    raw = {"data": {"name": "pusher", "seq_len": 4, "num_test": 4, "world": {"num_objects": 2, "gripper_radius": 0.18}},
           "model": {"name": "svg", "backbone": "dcgan64", "width": 8, "g_dim": 16, "z_dim": 2, "rnn_size": 16,
                     "n_past": 2, "n_future": 2, "n_eval": 2},
           "likelihood": {"name": "optimal_sigma"}, "train": {"steps": 1}}
    cfg = RunConfig.from_dict(raw)
    old = cfg.to_dict()
    old["data"] = {**{k: v for k, v in old["data"].items() if k != "world"}, **old["data"]["world"]}  # the old layout
    assert "world" not in old["data"] and old["data"]["gripper_radius"] == 0.18
    spec = PusherDataset(cfg.data, "test").spec
    torch.manual_seed(0)
    model = build_model(cfg, spec)
    save_checkpoint(tmp_path / "old.pt", {"config": old, "spec": asdict(spec), "step": 3, "model": model.state_dict()})
    loaded, loaded_cfg, payload = load_model(tmp_path / "old.pt")
    assert loaded_cfg.data == cfg.data and loaded_cfg.data.world.num_objects == 2
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    # mixing an old flat key with the new section: the explicit world section wins
    mixed = RunConfig.from_dict({**raw, "data": {**raw["data"], "object_radius": 0.25}})
    assert mixed.data.world.object_radius == 0.25 and mixed.data.world.gripper_radius == 0.18
