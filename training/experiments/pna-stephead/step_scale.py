"""Does a rule change its step size across networks? Per network: the mean magnitude output m,
the RMS of the direction d, and per tensor the RMS of the update relative to the RMS of the
parameters, averaged over steps 101-300 of one training run (train split, seed 101).

    python training/experiments/pna-stephead/step_scale.py training/experiments/pna-unroll100/best \
        fmnist17-d1,fmnist17-w8,fmnist17,fmnist17-d2 > training/experiments/pna-stephead/step_scale-stage4.txt
"""
import statistics
import sys

import torch
import torch.nn.functional as F

from gnnopt.data import load_dataset, BatchStream
from gnnopt.tasks import get_task
from gnnopt.hub import load_rule
from gnnopt.optimizer import GNNOptimizer

torch.set_num_threads(1)
rule = load_rule(sys.argv[1])
data = load_dataset("fmnist", None)
for name in sys.argv[2].split(","):
    task = get_task(name)
    torch.manual_seed(101)
    model = task.build_model()
    opt = GNNOptimizer(model.named_parameters(), rule)
    outs = []
    h = rule.register_forward_hook(lambda mod, inp, out: outs.append(out[0].detach()))
    stream = BatchStream(data.train, task.batch_size, torch.Generator().manual_seed(101))
    rel = {n: [] for n, _ in model.named_parameters()}
    ms, ds = [], []
    for step in range(1, 301):
        x, y = stream.next()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt.step()
        if step > 100:
            o = outs[-1]
            ds.append(o[:, 0].pow(2).mean().sqrt().item()); ms.append(o[:, 1].mean().item())
            for n, p in model.named_parameters():
                rel[n].append(((p.detach() - before[n]).pow(2).mean().sqrt() / before[n].pow(2).mean().sqrt().clamp_min(1e-8)).item())
        outs.clear()
    h.remove()
    print(f"{name}: mean m {statistics.fmean(ms):.2f} (exp(0.01 m) = {torch.tensor(0.01*statistics.fmean(ms)).exp():.3f}), rms d {statistics.fmean(ds):.3f}")
    for n, v in rel.items():
        print(f"   {n:30s} rel update {statistics.fmean(v):.2e}")
