"""Params and FLOPs (multiply-accumulates) of one architecture's stand-alone child.

    python experiments/inspect_arch.py space=shufflenet scale=paper 'arch=[0,0,3,0,3,2,0,0,3,3,2,3,3,3,2,0,0,3,3,0]'
    python experiments/inspect_arch.py space=nb201 scale=paper \
        'arch="|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"'

Prints one line per decision, then, as its last line, one JSON object with at least ``params``
and ``flops``. FLOPs are counted by torch.utils.flop_counter (conv and linear layers) and
reported as multiply-accumulates, the unit of the NAS papers.
"""

from __future__ import annotations

import json

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import cli
from nasbench.data import input_spec
from nasbench.errors import UserError
from nasbench.flops import count_macs, count_params
from run import build_space


def reference_data(cfg: DictConfig) -> DictConfig:
    """The data set whose shape and classes the counts use: ``data=...`` when given; otherwise,
    at scale=paper, the one the space's published counts refer to (``space.paper_data``:
    ImageNet for shufflenet, CIFAR-10 for nb201), and the run's default (Fashion-MNIST) below it."""
    given = any(o.split("=", 1)[0].lstrip("+~") == "data" for o in HydraConfig.get().overrides.task)
    if given:
        return cfg.data
    name = cfg.space.get("paper_data", "imagenet") if cfg.scale.name == "paper" else "fashion_mnist"
    return OmegaConf.load(cli.CONF_DIR / "data" / f"{name}.yaml")


def inspect(cfg: DictConfig) -> dict:
    if cfg.arch is None:
        raise UserError('give the architecture: arch=[i,j,...] (one op index per decision) or arch="<string>"')
    spec = input_spec(reference_data(cfg))
    space = build_space(cfg, spec)
    value = cfg.arch if isinstance(cfg.arch, str) else OmegaConf.to_container(cfg.arch)
    arch = space.parse_arch(value)
    child = space.build_child(arch).eval()
    example = torch.zeros(1, *spec.shape)
    table = space.candidate_macs()
    for i, (decision, op) in enumerate(zip(space.decisions, space.describe(arch))):
        print(f"{decision.name:>10}: {op:<14} {table[i, arch[i]] / 1e6:8.2f} MMACs")
    result = {
        "space": space.name,
        "scale": cfg.scale.name,
        "arch": space.encode(arch),
        "input_shape": list(spec.shape),
        "resolution": getattr(space, "resolution", spec.size),
        "num_classes": spec.num_classes,
        "params": count_params(child),
        "flops": count_macs(child, example),
        "flops_unit": "multiply-accumulates",
    }
    print(json.dumps(result))
    return result


@hydra.main(version_base=None, config_path="conf", config_name="inspect_arch")
def main(cfg: DictConfig) -> None:
    with cli.user_errors():
        inspect(cfg)


if __name__ == "__main__":
    cli.entry(main, groups=("space", "data", "scale"))
