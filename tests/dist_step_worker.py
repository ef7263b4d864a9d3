"""One supernet training step, in one process or under torchrun (used by test_distributed.py).

    python tests/dist_step_worker.py OUT ESTIMATOR            # the whole batch in one process
    python tests/dist_step_worker.py OUT ESTIMATOR half       # its first half only (a control)
    torchrun --nproc_per_node=2 tests/dist_step_worker.py OUT ESTIMATOR   # half a batch per rank
    ... OUT ESTIMATOR paths=4   # the step cut into 4 sub-batches on 4 independent paths

Every process builds the same tiny supernet, alpha and batch from fixed seeds, takes its part of
the batch (nasbench.distributed.shard_batches), runs the suite's own step (estimator_step: one
forward, one backward, weights and alpha from that backward) through ``distributed.wrap``, and
rank 0 saves alpha, alpha's gradient and the weights after the step. BatchNorm runs in eval
mode, so the per-rank losses are exact halves of the whole batch's mean loss.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "experiments"), str(ROOT / "tests")]

from conftest import tiny_space  # noqa: E402
from methods.estimators.base import build_estimator  # noqa: E402
from methods.steps import StepOptions, estimator_step  # noqa: E402
from nasbench import distributed  # noqa: E402
from nasbench.arch_params import ArchParameters  # noqa: E402
from nasbench.train import weight_optimizer  # noqa: E402


def main(out: str, estimator_name: str, half: bool = False, paths: int = 1) -> None:
    env, device = distributed.init(torch.device("cpu"))
    torch.manual_seed(0)
    space = tiny_space()
    supernet = space.build_supernet().eval()  # BatchNorm from running statistics: batch-independent
    arch = ArchParameters(space.candidate_mask(), 0.0, 0.5, torch.Generator().manual_seed(1))
    estimator = build_estimator({"name": estimator_name})
    estimator.on_epoch_start(0, 1)
    weight_opt = weight_optimizer(supernet, {"lr": 0.1, "momentum": 0.0, "weight_decay": 0.0})
    alpha_opt = torch.optim.SGD([arch.alpha], lr=1.0)
    batch = 8
    x = torch.rand(batch, *space.inputs.shape, generator=torch.Generator().manual_seed(2))
    y = torch.randint(space.inputs.num_classes, (batch,), generator=torch.Generator().manual_seed(3))
    (part,) = distributed.shard_batches(torch.arange(batch), batch, drop_last=True)
    if half:
        part = part[: batch // 2]
    sampler = torch.Generator().manual_seed(4)
    trained = distributed.wrap(supernet, find_unused=estimator.single_path or paths > 1)
    loss = torch.nn.CrossEntropyLoss()
    options = StepOptions(paths=paths)
    step = estimator_step(trained, estimator, arch, sampler, device, loss, weight_opt, alpha_opt, options=options)
    step(x[part], y[part])
    if env.is_main:
        weights = torch.cat([p.detach().flatten() for p in supernet.parameters()])
        state = {"alpha": arch.alpha.detach(), "alpha_grad": arch.alpha.grad, "weights": weights}
        torch.save({**state, "world_size": env.world_size, "rows": part.tolist()}, out)
    distributed.shutdown()


if __name__ == "__main__":
    flags = sys.argv[3:]
    paths = next((int(f.split("=")[1]) for f in flags if f.startswith("paths=")), 1)
    main(sys.argv[1], sys.argv[2], half="half" in flags, paths=paths)
