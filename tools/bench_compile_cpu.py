"""Compiled (inductor) vs eager training-step time on CPU for a tiny dcgan64 SVG (width 8, batch 4, 2 + 2 frames).

    OMP_NUM_THREADS=1 PYTHONPATH=. python tools/bench_compile_cpu.py

Measured (2 shared cores under other load, one thread), ratios within one run:
* LSTMs traced into the graph (seqvae.compiled.with_rnn, 1 graph): first step (compile) 221 s,
  then 37.6 ms compiled vs 87.7 ms eager per step (median of 20): ratio 0.43.
* before, with a graph break at every LSTM (8 graphs): 117 s compile, 27.2 vs 44.9 ms: ratio 0.61.
The compile cost is why train.compile is off on CPU by default.
"""
import copy
import statistics as st
import time

import torch

from seqvae import compiled
from seqvae.data.spec import DataSpec
from seqvae.likelihoods.gaussian import OptimalSigmaGaussian
from seqvae.models.svg import SVGConfig, build_svg

torch.manual_seed(0)
m = build_svg(SVGConfig(backbone="dcgan64", width=8, g_dim=16, z_dim=4, rnn_size=16, n_past=2, n_future=2),
              OptimalSigmaGaussian(), DataSpec(3,64,64,4,0))
x = torch.rand(4,4,3,64,64)
def run(model, fn, n):
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    ts=[]
    for i in range(n):
        t=time.perf_counter()
        out=fn({"frames": x})
        out.loss.backward()
        opt.step()
        model.commit_step(True)
        opt.zero_grad()
        ts.append(time.perf_counter()-t)
    return ts
me = copy.deepcopy(m)
mc = copy.deepcopy(m)
e = run(me, me, 23)
c = run(mc, compiled.compile_step(mc), 23)

print("compile (first step) s:", round(c[0],1), "graphs:", compiled.graph_count())
print("eager median step ms:", round(1e3*st.median(e[3:]),1), "compiled median step ms:", round(1e3*st.median(c[3:]),1),
      "ratio compiled/eager:", round(st.median(c[3:])/st.median(e[3:]),3))
