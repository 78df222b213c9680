"""The fixed-shape (CUDA-graph) path of seqvae.control.rollout: bucketed chunk sizes, and
padded rows that never change the real rows' results (checked eagerly on CPU)."""
import pytest
import torch
from test_rollout import N_CTX, A, gen, tiny_svg

from seqvae.control.rollout import CHUNK_BUCKETS, plan_chunks, rollout


def test_plan_chunks_covers_rows_with_few_fixed_sizes():
    for n_rows in [1, 7, 8, 9, 100, 1000, 3200, 5000]:
        for max_batch in [1, 5, 8, 100, 512, 4000, 100_000]:
            chunks = plan_chunks(n_rows, max_batch)
            # every row exactly once, in order
            assert [r for lo, hi, _ in chunks for r in range(lo, hi)] == list(range(n_rows))
            for lo, hi, size in chunks:
                assert size < 2 * (hi - lo) or size <= min(CHUNK_BUCKETS)   # padding under 2×
                assert hi - lo <= size                          # the chunk fits its padded size
                assert size <= max(max_batch, 1) or max_batch < min(CHUNK_BUCKETS)
                assert size in CHUNK_BUCKETS or size == max_batch
            full = {size for lo, hi, size in chunks[:-1]}
            assert len(full) <= 1                               # all chunks but the last: one size
    assert plan_chunks(1000, 4000) == [(0, 1000, 1024)]
    assert plan_chunks(3200, 4000) == [(0, 2048, 2048), (2048, 3200, 2048)]
    assert plan_chunks(3200, 10_000) == [(0, 3200, 4096)]
    assert plan_chunks(1000, 600) == [(0, 512, 512), (512, 1000, 512)]
    assert plan_chunks(530, 600) == [(0, 512, 512), (512, 530, 32)]
    assert plan_chunks(7, 5) == [(0, 5, 5), (5, 7, 5)]          # below the smallest bucket: max_batch itself
    assert plan_chunks(0, 8) == []
    # across any row counts up to 10 000 with the same budget, only a handful of shapes
    assert len({size for n in range(1, 10_001, 37) for _, _, size in plan_chunks(n, 3000)}) <= len(CHUNK_BUCKETS)
    with pytest.raises(ValueError):
        plan_chunks(5, 0)


def test_padded_chunks_equal_plain_slices():
    """cuda_graphs=True on CPU: the same padded chunks, run eagerly; the real rows match the
    graph-free path (padding repeats the last row and is dropped)."""
    model = tiny_svg()
    b, k, s, horizon = 2, 5, 3, 4                     # 30 rows; max_batch 20 -> 16 + 14 padded to 16
    ctx = torch.rand(b, N_CTX, 3, 64, 64, generator=gen(1))
    actions = torch.randn(b, k, horizon, A, generator=gen(2))
    seen = []

    def cost(frames, index):
        seen.append(index.clone())
        return frames.mean(dim=(1, 2, 3, 4)) + index[:, 1].float()

    # fp32: the two paths run batches of other sizes (20 + 10 rows against 16 + 16), and under bf16
    # autocast (the "auto" precision where the CPU computes bf16 natively) oneDNN picks its
    # kernels per batch size, which round to bf16 differently (see tests/test_rollout.py)
    plain = rollout(model, ctx, actions, s, generator=gen(3), max_batch=20, cost_fn=cost, cuda_graphs=False,
                    precision="fp32")
    n_plain = len(seen)
    padded = rollout(model, ctx, actions, s, generator=gen(3), max_batch=20, cost_fn=cost, cuda_graphs=True,
                     precision="fp32")
    assert [c.shape[0] for c in seen[n_plain:]] == [16, 14]   # cost_fn sees only the real rows
    torch.testing.assert_close(padded.frames, plain.frames, rtol=0, atol=1e-5)
    torch.testing.assert_close(padded.costs, plain.costs, rtol=0, atol=1e-5)
    assert float((plain.frames[:, 0] - plain.frames[:, 1]).abs().max()) > 1e-3   # the candidates differ
    assert torch.equal(torch.cat(seen[n_plain:]), torch.cat(seen[:n_plain]))      # same (b, k, s) rows, in order


@pytest.mark.slow   # 34 s on the loaded 2-core machine (tracing the unrolled LSTMs)
def test_predict_traces_to_one_graph_equal_to_eager():
    """What the CUDA-graph path compiles (model.predict with explicit noise, LSTMs inside the
    graph) traces without graph breaks and gives the eager frames; aot_eager on CPU stands in
    for inductor + CUDA graphs, which only a GPU runs."""
    from seqvae import compiled

    model = tiny_svg()
    ctx = torch.rand(8, N_CTX, 3, 64, 64, generator=gen(1))
    actions = torch.randn(8, N_CTX + 2, A, generator=gen(2))
    noise = torch.randn(8, N_CTX + 2, model.z_dim, generator=gen(3))
    torch._dynamo.reset()
    before = compiled.graph_count()
    fn = compiled.with_rnn(torch.compile(model.predict, backend="aot_eager", dynamic=False))
    want = model.predict(ctx, 3, actions, generator=None, noise=noise)
    got = fn(ctx, 3, actions, generator=None, noise=noise)
    again = fn(ctx, 3, actions, generator=None, noise=noise.flip(0))
    assert compiled.graph_count() == before + 1                  # one graph, reused for new values
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert float((again - got).abs().max()) > 1e-3
