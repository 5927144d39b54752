"""Run by ``torchrun`` in tests: a tiny meta-training run, then each rank saves its rule."""
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from gnnopt.training import MetaTrainer, TrainConfig

out = Path(sys.argv[1])
torch.set_num_threads(1)
cfg = TrainConfig(rule="ff", outer_steps=3, inner_steps=4, eval_every=3, embedded=True, lr=1e-3)
trainer = MetaTrainer(cfg, out, progress=False)
trainer.train()
rank = trainer.dist.rank
save_file({k: v.contiguous() for k, v in trainer.rule.state_dict().items()}, out / f"rank{rank}.safetensors")
trainer.dist.close()
