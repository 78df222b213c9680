"""BAIR loader on small TFRecord files written in the original format, and the download tool's
pure parts (tar verify/extract, resumable download) on a tiny tar and a fake server."""
from __future__ import annotations

import importlib.util
import io
import sys
import tarfile
import urllib.error
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from tfrecord import TFRecordWriter
from torch.utils.data import DataLoader

from seqvae.data.bair import (
    BairConfig,
    BairEvalDataset,
    BairTrainDataset,
    CorruptRecordError,
    build_bair,
    scan_tfrecord,
)
from seqvae.registry import DATASETS

REPO = Path(__file__).resolve().parents[1]
TRAIN_FILES = {"traj_0_to_4.tfrecords": range(0, 5), "traj_5_to_9.tfrecords": range(5, 9),
               "traj_10_to_13.tfrecords": range(9, 13)}          # 13 sequences, natural order != lexicographic
TEST_FILES = {"traj_0_to_2.tfrecords": range(100, 103)}


def make_sequence(seq_id: int) -> dict[str, np.ndarray]:
    """A 30-step sequence whose action[t] = (seq_id, t, noise, noise) identifies it and its steps."""
    rng = np.random.default_rng(seq_id)
    actions = rng.standard_normal((30, 4)).astype(np.float32)
    actions[:, 0], actions[:, 1] = seq_id, np.arange(30)
    return {"frames": rng.integers(0, 256, (30, 64, 64, 3), dtype=np.uint8),     # HWC, as stored
            "actions": actions, "eef": rng.standard_normal((30, 3)).astype(np.float32)}


def write_tfrecords(path: Path, seq_ids, corrupt=None) -> None:
    """Write sequences with the tfrecord package in the BAIR feature layout; ``corrupt(k, datum)``
    may alter the datum of the k-th record of the file."""
    writer = TFRecordWriter(str(path))
    for k, seq_id in enumerate(seq_ids):
        seq = make_sequence(seq_id)
        datum = {}
        for t in range(30):
            datum[f"{t}/image_aux1/encoded"] = (seq["frames"][t].tobytes(), "byte")
            datum[f"{t}/action"] = (seq["actions"][t].tolist(), "float")
            datum[f"{t}/endeffector_pos"] = (seq["eef"][t].tolist(), "float")
        if corrupt is not None:
            corrupt(k, datum)
        writer.write(datum)
    writer.close()


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bair")
    for split, files in (("train", TRAIN_FILES), ("test", TEST_FILES)):
        folder = root / "softmotion30_44k" / split
        folder.mkdir(parents=True)
        for name, ids in files.items():
            write_tfrecords(folder / name, ids)
    return root


def seq_id_of(item) -> int:
    return int(item["actions"][0, 0])


def assert_window(item, seq_len: int) -> int:
    """The item is steps start..start+seq_len-1 of its true sequence, exactly; returns start."""
    seq_id, start = seq_id_of(item), int(item["actions"][0, 1])
    truth = make_sequence(seq_id)
    window = slice(start, start + seq_len)
    assert item["frames"].dtype == torch.uint8 and item["frames"].shape == (seq_len, 3, 64, 64)
    assert torch.equal(item["frames"], torch.from_numpy(truth["frames"][window]).permute(0, 3, 1, 2))
    assert torch.equal(item["actions"], torch.from_numpy(truth["actions"][window]))
    assert torch.equal(item["endeffector_pos"], torch.from_numpy(truth["eef"][window]))
    return start


def loader_ids(ds, num_workers: int) -> list[int]:
    loader = DataLoader(ds, batch_size=2, num_workers=num_workers)
    return [int(i) for batch in loader for i in batch["actions"][:, 0, 0]]


# ------------------------------------------------------------------------ reading
def test_test_split_round_trip_in_order(root):
    cfg = BairConfig(root=str(root))
    assert DATASETS.config_class("bair") is BairConfig
    ds = DATASETS.build(cfg, "test")
    assert isinstance(ds, BairEvalDataset) and len(ds) == 3
    assert (ds.spec.channels, ds.spec.height, ds.spec.width, ds.spec.seq_len, ds.spec.action_dim) == (3, 64, 64, 30, 4)
    assert [seq_id_of(ds[i]) for i in range(3)] == [100, 101, 102]
    for i in range(3):
        assert assert_window(ds[i], 30) == 0
    short = build_bair(BairConfig(root=str(root), eval_seq_len=5), "test")
    assert short.spec.seq_len == 5 and assert_window(short[2], 5) == 0
    with pytest.raises(IndexError, match="out of range"):
        ds[3]


def test_training_windows_are_consecutive_slices(root):
    ds = build_bair(BairConfig(root=str(root), seq_len=12), "train")
    assert isinstance(ds, BairTrainDataset) and ds.spec.seq_len == 12 and len(ds) == 13
    starts = [assert_window(item, 12) for epoch in (0, 1) for item in (ds.set_epoch(epoch), list(ds))[1]]
    assert len(starts) == 26 and min(starts) >= 0 and max(starts) <= 18
    assert len(set(starts)) > 3, "random windows should start at varied steps"
    fixed = build_bair(BairConfig(root=str(root), seq_len=7, random_windows=False), "train")
    assert {assert_window(item, 7) for item in fixed} == {0}


@pytest.mark.filterwarnings("ignore:This DataLoader will create")   # 3 workers on a 2-core machine
def test_each_sequence_once_per_epoch_across_workers_and_ranks(root):
    files = sorted((root / "softmotion30_44k" / "train").glob("*.tfrecords"))
    for world, workers in ((1, 3), (2, 2), (2, 3)):
        seen: list[int] = []
        for rank in range(world):
            ds = BairTrainDataset(files, 12, seed=3, rank=rank, world_size=world)
            ds.set_epoch(4)
            ids = loader_ids(ds, workers)
            assert len(ids) == len(ds)            # __len__ is this rank's share
            assert abs(len(ids) - 13 / world) < 1
            seen += ids
        assert sorted(seen) == list(range(13)), (world, workers, Counter(seen))
    # the (sequence, window) pairs of an epoch do not depend on the sharding
    one = BairTrainDataset(files, 12, seed=3)
    two = BairTrainDataset(files, 12, seed=3, rank=1, world_size=2)
    one.set_epoch(4), two.set_epoch(4)
    pairs = {(seq_id_of(it), int(it["actions"][0, 1])) for it in one}
    assert {(seq_id_of(it), int(it["actions"][0, 1])) for it in two} <= pairs


def test_epochs_shuffle_differently_but_reproducibly(root):
    cfg = BairConfig(root=str(root), seed=7)
    ds = build_bair(cfg, "train")
    order = {}
    for epoch in (0, 1, 2):
        ds.set_epoch(epoch)
        order[epoch] = [(seq_id_of(it), int(it["actions"][0, 1])) for it in ds]
        assert sorted(i for i, _ in order[epoch]) == list(range(13))
    ids = {epoch: [i for i, _ in pairs] for epoch, pairs in order.items()}
    assert ids[0] != ids[1] != ids[2] != ids[0]          # the sequence order itself changes per epoch
    again = build_bair(cfg, "train")
    again.set_epoch(1)
    assert [(seq_id_of(it), int(it["actions"][0, 1])) for it in again] == order[1]
    other = build_bair(BairConfig(root=str(root), seed=8), "train")
    other.set_epoch(1)
    assert [seq_id_of(it) for it in other] != [i for i, _ in order[1]]


def test_validation_split_is_last_files_in_natural_order(root):
    train = build_bair(BairConfig(root=str(root), val_fraction=0.3), "train")   # round(0.9) = 1 file
    val = build_bair(BairConfig(root=str(root), val_fraction=0.3), "val")
    assert [p.name for p in val.index.files] == ["traj_10_to_13.tfrecords"]
    assert [seq_id_of(val[i]) for i in range(len(val))] == [9, 10, 11, 12]
    assert sorted(seq_id_of(it) for it in train) == list(range(9))
    assert val.spec.seq_len == 30 and assert_window(val[0], 30) == 0
    with pytest.raises(ValueError, match="val_fraction"):
        build_bair(BairConfig(root=str(root)), "val")
    with pytest.raises(ValueError, match="leaving none"):
        build_bair(BairConfig(root=str(root), val_fraction=0.9), "train")


def test_missing_root_names_the_download_command(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as err:
        build_bair(BairConfig(root=str(missing)), "train")
    message = str(err.value)
    assert f"python tools/download_bair.py --root {missing}" in message
    assert str(missing / "softmotion30_44k" / "train") in message


# ---------------------------------------------------------------------- corruption
def corrupt_root(tmp_path: Path, split: str, name: str, corrupt=None) -> Path:
    folder = tmp_path / "softmotion30_44k" / split
    folder.mkdir(parents=True)
    write_tfrecords(folder / name, range(20, 24), corrupt)
    return folder / name


def test_truncated_file_raises_or_is_skipped(tmp_path):
    path = corrupt_root(tmp_path, "train", "traj_20_to_23.tfrecords")
    path.write_bytes(path.read_bytes()[:-100])
    cfg = BairConfig(root=str(tmp_path))
    with pytest.raises(CorruptRecordError, match=r"traj_20_to_23\.tfrecords, record 3: truncated") as err:
        build_bair(cfg, "train")
    assert err.value.path == str(path) and err.value.index == 3 and "skip_corrupt" in str(err.value)
    with pytest.warns(UserWarning, match=r"traj_20_to_23\.tfrecords, record 3"):
        ds = build_bair(BairConfig(root=str(tmp_path), skip_corrupt=True), "train")
    assert sorted(seq_id_of(it) for it in ds) == [20, 21, 22]
    with pytest.warns(UserWarning, match="rest of the file"):
        assert len(scan_tfrecord(path, skip_corrupt=True)) == 3


def wrong_image_size(k, datum):
    if k == 1:
        datum["7/image_aux1/encoded"] = (b"\x00" * (64 * 64 * 3 - 1), "byte")


def missing_feature(k, datum):
    if k == 1:
        del datum["29/endeffector_pos"]


@pytest.mark.parametrize("corrupt, problem", [(wrong_image_size, "'7/image_aux1/encoded' has 12287 bytes"),
                                              (missing_feature, "'29/endeffector_pos' is missing")])
def test_bad_record_on_test_split_raises_or_is_skipped(tmp_path, corrupt, problem):
    corrupt_root(tmp_path, "test", "traj_0_to_3.tfrecords", corrupt)
    ds = build_bair(BairConfig(root=str(tmp_path)), "test")
    assert seq_id_of(ds[0]) == 20
    with pytest.raises(CorruptRecordError, match=rf"traj_0_to_3\.tfrecords, record 1: feature {problem}"):
        ds[1]
    with pytest.warns(UserWarning, match=r"traj_0_to_3\.tfrecords, record 1"):
        ds = build_bair(BairConfig(root=str(tmp_path), skip_corrupt=True), "test")
    assert [seq_id_of(ds[i]) for i in range(len(ds))] == [20, 22, 23]


def test_bad_record_in_training_raises_through_workers_or_is_skipped(tmp_path):
    path = corrupt_root(tmp_path, "train", "traj_4_to_7.tfrecords", wrong_image_size)
    ds = build_bair(BairConfig(root=str(tmp_path)), "train")
    with pytest.raises(CorruptRecordError, match=r"traj_4_to_7\.tfrecords, record 1: feature '7/image_aux1"):
        loader_ids(ds, 1)                      # re-raised from the worker with file and record
    skip = build_bair(BairConfig(root=str(tmp_path), skip_corrupt=True), "train")
    with pytest.warns(UserWarning, match=r"traj_4_to_7\.tfrecords, record 1"):
        assert sorted(seq_id_of(it) for it in skip) == [20, 22, 23]
    # a flipped byte inside a record fails its CRC
    data = bytearray(path.read_bytes())
    data[int(scan_tfrecord(path)[2]) + 12 + 5000] ^= 0xFF   # inside record 2's data
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptRecordError, match=r"traj_4_to_7\.tfrecords, record 2: data fails its CRC"):
        list(build_bair(BairConfig(root=str(tmp_path), random_windows=False), "train"))


def bad_value(feature: str, value: float, records=(1,)):
    """Corrupt step 13 of ``feature`` (``action`` or ``endeffector_pos``) in the given records."""
    def corrupt(k, datum):
        if k in records:
            values = list(datum[f"13/{feature}"][0])
            values[1] = value
            datum[f"13/{feature}"] = (values, "float")
    return corrupt


@pytest.mark.parametrize("feature", ["action", "endeffector_pos"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 1e38])
def test_non_finite_or_huge_actions_and_positions_are_corrupt_records(tmp_path, feature, value):
    corrupt_root(tmp_path, "test", "traj_0_to_3.tfrecords", bad_value(feature, value))
    ds = build_bair(BairConfig(root=str(tmp_path), eval_seq_len=5), "test")   # the bad step lies outside the window
    with pytest.raises(CorruptRecordError, match=rf"record 1: feature '13/{feature}' holds") as err:
        ds[1]
    assert err.value.index == 1 and err.value.path.endswith("traj_0_to_3.tfrecords")
    with pytest.warns(UserWarning, match=rf"record 1: feature '13/{feature}'"):
        ds = build_bair(BairConfig(root=str(tmp_path), skip_corrupt=True), "test")
    assert [seq_id_of(ds[i]) for i in range(len(ds))] == [20, 22, 23]
    assert all(torch.isfinite(ds[i]["actions"]).all() and torch.isfinite(ds[i]["endeffector_pos"]).all()
               for i in range(len(ds)))


def test_worker_errors_keep_file_and_record_and_pickle_with_them(tmp_path):
    import pickle

    path = corrupt_root(tmp_path, "train", "traj_4_to_7.tfrecords", bad_value("action", float("nan")))
    ds = build_bair(BairConfig(root=str(tmp_path), random_windows=False), "train")
    with pytest.raises(CorruptRecordError) as err:
        loader_ids(ds, 1)                       # raised in a DataLoader worker process
    assert err.value.path == str(path) and err.value.index == 1
    message = str(err.value)
    assert message.startswith(f"corrupt BAIR TFRecord {path}, record 1: feature '13/action' holds nan")
    assert "Traceback" not in message and "DataLoader worker" not in message and "skip_corrupt" in message
    again = pickle.loads(pickle.dumps(err.value))
    assert (again.path, again.index, str(again), again.brief) == (err.value.path, 1, message, err.value.brief)


def test_everything_skipped_as_corrupt_says_so(tmp_path):
    from seqvae.data.loader import batch_stream

    everything = bad_value("endeffector_pos", 1e38, records=range(4))
    corrupt_root(tmp_path, "train", "traj_0_to_3.tfrecords", everything)
    corrupt_root(tmp_path, "test", "traj_0_to_3.tfrecords", everything)
    cfg = BairConfig(root=str(tmp_path), skip_corrupt=True)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"every BAIR record was skipped as corrupt \(4"):
        build_bair(cfg, "test")
    train = build_bair(cfg, "train")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="every BAIR record was skipped as corrupt") as err:
        next(batch_stream(train, batch_size=2, seed=0))
    assert "batch_size" not in str(err.value).split(":", 1)[1]   # not "lower train.batch_size or add data"


# -------------------------------------------------------------------- download tool
@pytest.fixture(scope="module")
def dl():
    spec = importlib.util.spec_from_file_location("download_bair", REPO / "tools" / "download_bair.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["download_bair"] = module          # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules["download_bair"]


def make_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_tar_verify_and_extract(dl, tmp_path):
    tar = make_tar(tmp_path / "bair.tar", {
        "softmotion30_44k/train/traj_0_to_255.tfrecords": b"train-a",
        "softmotion30_44k/train/traj_256_to_511.tfrecords": b"train-b",
        "softmotion30_44k/test/traj_0_to_255.tfrecords": b"test-a",
        "other/readme.txt": b"not extracted",
    })
    contents = dl.verify_tar(tar)
    assert (contents.train, contents.test) == (2, 1)
    root = tmp_path / "root"
    assert dl.extract_tar(tar, root, contents) == (3, 0)
    assert (root / "softmotion30_44k/train/traj_256_to_511.tfrecords").read_bytes() == b"train-b"
    assert (root / "softmotion30_44k/test/traj_0_to_255.tfrecords").read_bytes() == b"test-a"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "softmotion30_44k/test/traj_0_to_255.tfrecords", "softmotion30_44k/train/traj_0_to_255.tfrecords",
        "softmotion30_44k/train/traj_256_to_511.tfrecords"]
    assert dl.is_extracted(root)
    assert dl.extract_tar(tar, root) == (0, 3)            # re-run keeps what is there
    user_file = root / "softmotion30_44k/test/traj_0_to_255.tfrecords"
    user_file.write_bytes(b"the user's own, longer file")
    with pytest.raises(dl.DownloadError, match="not overwriting"):
        dl.extract_tar(tar, root)
    assert user_file.read_bytes() == b"the user's own, longer file"
    import hashlib
    assert dl.verify_tar(tar, hashlib.sha256(tar.read_bytes()).hexdigest()).train == 2
    with pytest.raises(dl.DownloadError, match="SHA-256"):
        dl.verify_tar(tar, "0" * 64)
    assert tar.exists()


def test_tar_without_the_folder_is_rejected(dl, tmp_path):
    only_train = make_tar(tmp_path / "a.tar", {"softmotion30_44k/train/x.tfrecords": b"x"})
    with pytest.raises(dl.DownloadError, match=r"softmotion30_44k/test/\*\.tfrecords"):
        dl.verify_tar(only_train)
    unrelated = make_tar(tmp_path / "b.tar", {"data/x.tfrecords": b"x"})
    with pytest.raises(dl.DownloadError, match="not the BAIR"):
        dl.verify_tar(unrelated)
    (tmp_path / "c.tar").write_bytes(b"definitely not a tar" * 50)
    with pytest.raises(dl.DownloadError, match="not a readable tar"):
        dl.verify_tar(tmp_path / "c.tar")


class FakeResponse(io.BytesIO):
    def __init__(self, data: bytes, status: int, headers: dict):
        super().__init__(data)
        self.status, self.headers = status, headers


def fake_server(payload: bytes, honour_range: bool = True):
    def urlopen(request):
        rng = request.get_header("Range")
        if rng and honour_range:
            start = int(rng.split("=")[1].rstrip("-"))
            if start >= len(payload):
                raise urllib.error.HTTPError(request.full_url, 416, "Range Not Satisfiable",
                                             {"Content-Range": f"bytes */{len(payload)}"}, None)
            return FakeResponse(payload[start:], 206,
                                {"Content-Range": f"bytes {start}-{len(payload) - 1}/{len(payload)}"})
        return FakeResponse(payload, 200, {"Content-Length": str(len(payload))})
    return urlopen


def test_download_resumes_and_renames_atomically(dl, tmp_path):
    payload = bytes(range(256)) * 40
    dest = tmp_path / "bair.tar"
    part = tmp_path / "bair.tar.part"
    part.write_bytes(payload[:3000])
    assert dl.download("http://x/bair.tar", dest, urlopen=fake_server(payload)) == dest
    assert dest.read_bytes() == payload and not part.exists()
    fresh = tmp_path / "fresh.tar"
    dl.download("http://x/bair.tar", fresh, urlopen=fake_server(payload))
    assert fresh.read_bytes() == payload
    done = tmp_path / "done.tar"                                # a complete .part: server answers 416
    (tmp_path / "done.tar.part").write_bytes(payload)
    dl.download("http://x/bair.tar", done, urlopen=fake_server(payload))
    assert done.read_bytes() == payload
    with pytest.raises(dl.DownloadError, match="already exists"):
        dl.download("http://x/bair.tar", dest, urlopen=fake_server(payload))


def test_download_never_clobbers_a_partial_file(dl, tmp_path):
    payload = b"abcdef" * 100
    part = tmp_path / "bair.tar.part"
    part.write_bytes(payload[:50])
    with pytest.raises(dl.DownloadError, match="ignored the resume request"):
        dl.download("http://x/bair.tar", tmp_path / "bair.tar", urlopen=fake_server(payload, honour_range=False))
    assert part.read_bytes() == payload[:50]
    short = fake_server(payload[:400])                           # server's file shorter than announced
    def lying(request):
        response = short(request)
        response.headers = {"Content-Range": response.headers["Content-Range"].rsplit("/", 1)[0] + "/600"}
        return response
    with pytest.raises(dl.DownloadError, match="re-run"):
        dl.download("http://x/bair.tar", tmp_path / "bair.tar", urlopen=lying)
    assert not (tmp_path / "bair.tar").exists() and part.stat().st_size == 400


def test_cli_uses_an_existing_tar_and_then_loads(dl, tmp_path, capsys):
    """The CLI skips the download when the tar is there; the extracted tree is what the loader reads."""
    source = tmp_path / "src.tfrecords"
    write_tfrecords(source, [1, 2])
    data = source.read_bytes()
    root = tmp_path / "root"
    root.mkdir()
    make_tar(root / dl.TAR_NAME, {"softmotion30_44k/train/traj_0_to_1.tfrecords": data,
                                  "softmotion30_44k/test/traj_0_to_1.tfrecords": data})
    assert dl.main(["--root", str(root), "--no-extract"]) == 0
    assert not (root / "softmotion30_44k").exists()
    assert dl.main(["--root", str(root)]) == 0
    assert "2 files written" in capsys.readouterr().out
    ds = build_bair(BairConfig(root=str(root)), "test")
    assert [seq_id_of(ds[i]) for i in range(len(ds))] == [1, 2] and assert_window(ds[1], 30) == 0
    assert dl.main(["--root", str(root)]) == 0 and "0 files written, 2 already present" in capsys.readouterr().out
    assert (root / dl.TAR_NAME).exists()
