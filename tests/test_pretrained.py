"""Shipped pretrained models: safetensors only, verified against the manifest, built from
the config in their metadata."""
from __future__ import annotations

import json

import pytest
import torch

from seqvae import pretrained
from seqvae.build import build_data, build_model
from seqvae.config import RunConfig
from seqvae.loading import load_model

RAW = {"data": {"name": "pusher", "seq_len": 5, "num_test": 4, "action_conditioned": True},
       "model": {"name": "svg", "backbone": "dcgan64", "width": 8, "g_dim": 16, "z_dim": 2, "rnn_size": 16,
                 "n_past": 2, "n_future": 3, "n_eval": 3, "action_conditioned": True},
       "likelihood": {"name": "optimal_sigma"}, "train": {"steps": 1}}



@pytest.fixture()
def shipped(tmp_path, monkeypatch):
    """A tiny model exported into a temporary pretrained folder with its manifest."""
    monkeypatch.setattr(pretrained, "HERE", tmp_path)
    monkeypatch.setattr(pretrained, "MANIFEST", tmp_path / "manifest.json")
    cfg = RunConfig.from_dict(RAW)
    spec = build_data(cfg, "test").spec
    torch.manual_seed(0)
    model = build_model(cfg, spec).eval()
    digest = pretrained.export(model, cfg, spec, 42, tmp_path / "tiny.safetensors", dtype=torch.float32)
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"tiny": {"file": "tiny.safetensors", "sha256": digest, "card": "tiny.md", "summary": "a test model"}}))
    return model, cfg


def test_export_and_load_round_trip_gives_the_same_predictions(shipped):
    model, cfg = shipped
    loaded, loaded_cfg = pretrained.load("tiny")
    assert loaded_cfg == cfg and not loaded.training
    batch = build_data(cfg, "test").__getitems__([0, 1])
    frames = torch.stack([b["frames"] for b in batch]).float() / 255
    actions = torch.stack([b["actions"] for b in batch])
    noise = torch.randn(2, 4, 2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(loaded.predict(frames[:, :2], 3, actions, noise=noise),
                               model.predict(frames[:, :2], 3, actions, noise=noise), rtol=0, atol=0)
    # the command-line path: load_model("pretrained:NAME") reads the same
    via_cli, _, meta = load_model("pretrained:tiny")
    assert meta["step"] == 42 and meta["pretrained"] == "tiny"
    assert all(torch.equal(a, b) for a, b in zip(via_cli.state_dict().values(), loaded.state_dict().values()))


def test_a_tampered_file_is_refused(shipped, tmp_path):
    path = tmp_path / "tiny.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01                                    # one bit of one weight
    path.write_bytes(bytes(data))
    with pytest.raises(pretrained.PretrainedError, match="does not match the SHA-256"):
        pretrained.load("tiny")


def test_a_pickle_in_place_of_the_weights_is_never_unpickled(shipped, tmp_path):
    """A crafted pickle (that would run code) named like the weights: refused by the hash,
    and even with a matching hash it is not a safetensors file, so nothing runs."""
    import pickle

    class Boom:
        def __reduce__(self):
            return (exec, ("import pathlib; pathlib.Path(%r).write_text('ran')" % str(tmp_path / "pwned"),))

    path = tmp_path / "tiny.safetensors"
    path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(pretrained.PretrainedError):
        pretrained.load("tiny")
    with pytest.raises(pretrained.PretrainedError, match="not a readable safetensors"):
        pretrained.read_weights(path, pretrained.sha256(path))
    assert not (tmp_path / "pwned").exists()


def test_unknown_names_and_missing_files_are_clear_errors(shipped, tmp_path, capsys):
    from seqvae.cli import main

    with pytest.raises(pretrained.PretrainedError, match="available: tiny"):
        pretrained.load("tinny")
    (tmp_path / "tiny.safetensors").unlink()
    with pytest.raises(pretrained.PretrainedError, match="missing"):
        pretrained.load("tiny")
    assert main(["eval", "--pretrained", "nope"]) == 2
    assert "no pretrained model 'nope'" in capsys.readouterr().err
    assert main(["eval"]) == 2 and "either a checkpoint" in capsys.readouterr().err


def test_eval_of_a_pretrained_model_takes_overrides_without_a_checkpoint(tmp_path, capsys):
    """`seqvae eval --pretrained NAME key=value`: the first word is an override, not a checkpoint
    (the action-free model is evaluated on 30-frame sequences for the svg protocol this way)."""
    import json

    from seqvae.cli import main

    code = main(["eval", "--pretrained", "pusher", "data.eval_seq_len=30", "data.num_test=2", "--batches", "1",
                 "--protocol", "svg", "--samples", "1", "--sequences", "1", "--no-fvd", "--no-lpips",
                 "--out-dir", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    (folder,) = tmp_path.iterdir()
    record = json.loads((folder / "eval.json").read_text())
    assert record["overrides"] == ["data.eval_seq_len=30", "data.num_test=2"] and record["checkpoint"] is None
    assert record["results"]["counts_predicted_frames"] == 28         # the protocol's 2 -> 28 on 30-frame sequences


@pytest.mark.parametrize("edit", ["dropped", "added", "resized"])
def test_an_export_whose_tensors_do_not_fit_its_metadata_is_one_clear_line(shipped, tmp_path, capsys, edit):
    """A tensor dropped, added or resized (issue 23, item 5): load_model and every command that
    takes an exported file say so in one line (exit 2), not with load_state_dict's traceback."""
    from safetensors.torch import load_file, safe_open, save_file

    from seqvae.cli import main

    with safe_open(str(tmp_path / "tiny.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(tmp_path / "tiny.safetensors"))
    name = next(k for k in sorted(tensors) if tensors[k].dim() == 2)
    edited = {"dropped": {k: v for k, v in tensors.items() if k != name},
              "added": {**tensors, "extra.weight": torch.zeros(3)},
              "resized": {**tensors, name: torch.zeros(tensors[name].shape[0] + 1, tensors[name].shape[1])}}[edit]
    bad = tmp_path / f"{edit}.safetensors"
    save_file(edited, str(bad), metadata=metadata)
    what = {"dropped": f"missing {name}", "added": "unexpected extra.weight", "resized": f"shape of {name}"}[edit]
    with pytest.raises(pretrained.PretrainedError, match=f"{bad}: its weights do not fit .*{what}"):
        load_model(bad)
    for command in (["eval", str(bad)], ["rollout", str(bad), "--index", "0", "--out", str(tmp_path / "r")],
                    ["plan", f"checkpoint={bad}", "plan.episodes=1", f"out_dir={tmp_path / 'plan'}"]):
        assert main(command) == 2
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert "Traceback" not in captured.err and len(err.splitlines()) == 1, err
        assert err.startswith(f"seqvae {command[0]}: error: {bad}: its weights do not fit") and what in err
    assert not (tmp_path / "plan").exists() and not list(tmp_path.glob("r.*"))
