"""Params and FLOPs (multiply-accumulates) of one architecture's stand-alone child.

    python experiments/inspect_arch.py space=shufflenet scale=paper 'arch=[0,0,3,0,3,2,0,0,3,3,2,3,3,3,2,0,0,3,3,0]'
    python experiments/inspect_arch.py space=nb201 scale=paper \
        'arch="|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"'
    python experiments/inspect_arch.py space=darts scale=paper arch=DARTS_V2 [data=imagenet]
    python experiments/inspect_arch.py space=darts scale=paper \
        'arch="Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], reduce=[...], ...)"'

Prints one line per decision (darts: per cell node), then, as its last line, one JSON object with
at least ``params`` and ``flops`` of the deployed network (darts: the evaluation network, or with
data=imagenet the mobile-setting ImageNet network, auxiliary head excluded). FLOPs are counted
by torch.utils.flop_counter (conv and linear layers) and
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
    network, lines, encoded, which = space.inspect(value)
    example = torch.zeros(1, *spec.shape)
    for line in lines:
        print(line)
    result = {
        "space": space.name,
        "scale": cfg.scale.name,
        "arch": encoded,
        "network": which,
        "input_shape": list(spec.shape),
        "resolution": getattr(space, "resolution", spec.size),
        "num_classes": spec.num_classes,
        "params": count_params(network),
        "flops": count_macs(network, example),
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
