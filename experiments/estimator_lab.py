"""The estimator lab: bias, variance and cost of every estimator against the exact gradient.

    python experiments/estimator_lab.py space=nb201
    python experiments/estimator_lab.py space=shufflenet 'estimators=[dsnas,reinforce]' samples=2000
    python experiments/estimator_lab.py space=nb201 alpha_from=<run folder of the same space and scale>
    PYTHONPATH=my_nas python experiments/estimator_lab.py 'estimators=[dsnas,dsnas_ema]' hydra.searchpath=[file://my_nas/conf]

A small supernet (the space at ``scale``, default tiny; the last ``free`` decisions searched, the others
fixed at a reference path) is trained for ``warmup_steps`` uniform single-path steps, then held
fixed with one batch of ``batch_size`` training images. Every path's loss on that batch gives the
exact gradient of the search objective E_{Z~p_alpha}[L(Z)] (experiments/lab_exact.py) at each
alpha point (``points``: uniform, peaked at ``peaked_prob`` on a random op per decision, and
``run``: alpha and weights of ``alpha_from``'s supernet.pt). Each estimator then gives
``samples`` per-sample alpha gradients there (experiments/lab_stats.py), measured against the
exact gradient (bias, noise, error against the number of samples) and, where it declares one
(``Estimator.relaxation``), against the gradient of the relaxed objective it follows. A
temperature estimator is measured at each of ``temperatures`` (its first and last epoch's).

Writes lab.csv (a row per point x estimator), lab_curve.csv (error against samples), lab.json
(the problem and every choice) and figures/ into the run folder; ``analysis/report.py`` on the
folder adds them to a report.
"""

from __future__ import annotations

import logging
import sys
import time

import hydra
import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import cli
from lab_exact import LabProblem, enumerate_losses, exact_gradient, expected_loss, fix_all_but
from lab_setup import POINTS, alpha_at, load_run, warm_up
from lab_stats import compare, draw, error_curve, single_path_seconds
from lab_write import write_lab
from methods.estimators.base import Estimator, TemperatureEstimator, build_estimator
from nasbench.arch_params import ArchParameters
from nasbench.budget import BudgetMeter
from nasbench.data import load_data
from nasbench.device import configure, resolve_device
from nasbench.errors import UserError
from nasbench.provenance import set_threads
from nasbench.records import RunRecord
from nasbench.train import Trainer
from run import build_space, check_budget
from run_argv import discard_refused, note_existing_dirs

log = logging.getLogger("estimator_lab")


def estimator_entries(cfg: DictConfig, argv: list[str], space_name: str) -> tuple[list[tuple[str, dict]], dict]:
    """(label, config) per estimator to measure, and why each registered one left out was."""
    wanted = cfg.estimators
    names = cli.group_options("estimator", argv) if wanted in (None, "all") else [str(n) for n in wanted]
    entries, skipped = [], {}
    for name in names:
        head, *options = name.split("@")
        config = cli.group_config("estimator", head, argv)
        for option in options:
            key, sep, value = option.partition(":")
            if not sep:
                raise UserError(f"estimator option {option!r}: write it as key:value (gumbel_st@tau_start:1)")
            config[key] = yaml.safe_load(value)
        estimator = build_estimator(config)  # imports a plug-in's module; a bad key is one line
        reason = None
        if not estimator.learns_alpha:
            reason = "learns no alpha"
        elif not estimator.distribution:
            reason = "alpha is no distribution over paths (raw scales): no E_Z[L(Z)] to hold it against"
        elif estimator.requires_space is not None:
            reason = f"runs inside its method's network only (space={estimator.requires_space}, method's cells)"
        if reason is None:
            entries.append((name, config))
        elif wanted not in (None, "all"):
            raise UserError(f"estimator {name}: {reason}; the lab measures estimators of a distribution's gradient")
        else:
            skipped[name] = reason
    if not entries:
        raise UserError("no estimator to measure: give estimators=[...] with at least one that learns alpha")
    return entries, skipped


def temperatures(estimator: Estimator, which: list[str]) -> list[float | None]:
    if not isinstance(estimator, TemperatureEstimator):
        return [None]
    values = {"start": estimator.tau_start, "end": estimator.tau_end}
    unknown = [w for w in which if w not in values]
    if unknown:
        raise UserError(f"temperatures={which}: each is start or end")
    return list(dict.fromkeys(values[w] for w in which))


def relaxation_columns(estimator: Estimator, grads: torch.Tensor, exact: torch.Tensor, problem, cfg) -> dict:
    """Where the estimator declares a relaxed objective: how far that objective's gradient is from
    the exact one (``relaxation_*``), and how far the estimator's mean is from it (``relaxed_*``;
    only when the relaxation is another estimator: an estimator whose own mean is the relaxed
    gradient, DARTS's and SNAS's, is at zero distance by definition)."""
    relax = estimator.relaxation()
    if relax is None:
        return {}
    if relax is estimator:
        ref, out = grads.mean(0), {}
    else:
        ref = draw(relax, problem, int(cfg.samples), int(cfg.seed) + 2).grads.mean(0)
        to_relaxed = compare(grads, ref, 0)
        out = {"relaxed_cos": to_relaxed["cos"], "relaxed_rel_err": to_relaxed["rel_err"]}
    gap = compare(ref[None], exact, 0)
    return {**out, "relaxation_cos": gap["cos"], "relaxation_rel_err": gap["rel_err"]}


def experiment(cfg: DictConfig) -> dict:
    started = time.perf_counter()
    argv = [*HydraConfig.get().overrides.task, *HydraConfig.get().overrides.hydra]
    record = RunRecord(HydraConfig.get().runtime.output_dir)
    if (record.dir / "lab.json").exists() and not cfg.overwrite:
        raise UserError(f"{record.dir} already holds a lab result; choose another hydra.run.dir (or overwrite=true)")
    unknown = [p for p in cfg.points if p not in POINTS]
    if unknown or not cfg.points:
        raise UserError(f"points={list(cfg.points)}: choose from {', '.join(POINTS)}")
    if "run" in cfg.points and not cfg.alpha_from:
        raise UserError("points has run: give alpha_from=<run folder> (its supernet.pt's alpha and weights)")
    if int(cfg.samples) < 2 or not 0 < float(cfg.peaked_prob) < 1:
        raise UserError(f"samples={cfg.samples}, peaked_prob={cfg.peaked_prob}: samples >= 2, 0 < peaked_prob < 1")
    set_threads(cfg.get("threads"))
    device = resolve_device(cfg.device)
    configure(device, "fp32", False, bool(cfg.cudnn_benchmark))
    data = load_data(cfg.data)
    space = build_space(cfg, data.spec)
    entries, skipped = estimator_entries(cfg, argv, space.name)
    budget = check_budget(cfg)
    torch.manual_seed(int(cfg.seed))
    trainer = Trainer(
        {**budget, "batch_size": int(cfg.batch_size)}, data, device, BudgetMeter(device, 1), seed=int(cfg.seed)
    )
    supernet = space.build_supernet().to(device)
    run_alpha, reference = None, space.sample(torch.Generator().manual_seed(int(cfg.seed)))
    if cfg.alpha_from:
        run_alpha, reference = load_run(str(cfg.alpha_from), space, supernet)
    else:
        warm_up(supernet, space, trainer, budget, device, int(cfg.warmup_steps), int(cfg.seed))
    count = space.num_decisions
    free = list(range(count - int(cfg.free), count)) if isinstance(cfg.free, int) else [int(i) for i in cfg.free]
    if not free or max(free) >= space.num_decisions or min(free) < 0:
        raise UserError(f"free={cfg.free}: a count or list of decisions among the space's {space.num_decisions}")
    x, y = next(iter(trainer.search_loader(augment=False)))
    if cfg.batchnorm not in ("train", "eval"):
        raise UserError(
            f"batchnorm={cfg.batchnorm}: train (batch statistics, as search runs) or eval (running statistics)"
        )
    supernet.train(cfg.batchnorm == "train")
    problem = LabProblem(
        supernet,
        ArchParameters(space.candidate_mask()),
        x.to(device),
        y.to(device),
        torch.nn.functional.cross_entropy,
        device,
        free,
    )
    fix_all_but(problem.arch, free, reference)
    ops, losses = enumerate_losses(problem, int(cfg.max_paths))
    if float(losses.max() - losses.min()) == 0.0:
        raise UserError(
            f"every path has the same loss: the free decisions {free} do not reach the output on the reference path"
            f" {space.encode(reference)} (an edge into a node it does not use); choose others (free=[...])"
        )
    unit = single_path_seconds(problem, reference, repeats=21)
    log.info(
        "%d paths, losses %.4f..%.4f; one path's forward+backward %.1f ms",
        len(losses),
        losses.min(),
        losses.max(),
        unit * 1e3,
    )
    keep = problem.entries()
    rows, curves = [], []
    for point in cfg.points:
        alpha = alpha_at(point, problem.arch, free, float(cfg.peaked_prob), int(cfg.seed), run_alpha)
        with torch.no_grad():
            problem.arch.alpha.copy_(alpha)
        exact = exact_gradient(problem.arch.alpha, problem.arch.mask, free, ops, losses)[keep]
        objective = float(expected_loss(problem.arch.alpha.detach(), problem.arch.mask, free, ops, losses))
        for label, config in entries:
            for tau in temperatures(build_estimator(config), list(cfg.temperatures)):
                estimator = build_estimator(config)
                if tau is not None:
                    estimator.temperature = tau
                estimator.bind(space, device)
                samples = draw(estimator, problem, int(cfg.samples), int(cfg.seed) + 1)
                row = {
                    "point": point,
                    "estimator": label + ("" if tau is None else f"@tau={tau:g}"),
                    "temperature": tau,
                    "objective": objective,
                    "exact_norm": float(exact.norm()),
                }
                row.update(compare(samples.grads, exact, int(cfg.bootstrap), int(cfg.seed)))
                row.update(relaxation_columns(estimator, samples.grads, exact, problem, cfg))
                seconds = sorted(samples.seconds)[len(samples.seconds) // 2]
                row.update(
                    {
                        "ms_per_sample": seconds * 1e3,
                        "cost_vs_path": seconds / unit,
                        "ops_run": samples.ops_run,
                        "ops_probed": samples.ops_probed,
                    }
                )
                rows.append(row)
                curves += [
                    {"point": point, "estimator": row["estimator"], **c} for c in error_curve(samples.grads, exact)
                ]
                log.info(
                    "%s %s: cos %.3f, rel_err %.3f, rel_bias %.3f, rel_std %.2f, x%.2f a path",
                    point,
                    row["estimator"],
                    row["cos"],
                    row["rel_err"],
                    row["rel_bias"],
                    row["rel_std"],
                    row["cost_vs_path"],
                )
    meta = {
        "kind": "estimator_lab",
        "space": space.name,
        "scale": cfg.scale.name,
        "data": data.name,
        "seed": int(cfg.seed),
        "free_decisions": free,
        "reference_path": space.encode(reference),
        "paths": len(losses),
        "path_loss_min": float(losses.min()),
        "path_loss_max": float(losses.max()),
        "batch_size": int(x.shape[0]),
        "weights": f"alpha_from {cfg.alpha_from}"
        if cfg.alpha_from
        else f"{cfg.warmup_steps} uniform single-path steps",
        "loss": "mean cross-entropy of the fixed batch, no label smoothing",
        "batchnorm": "batch statistics (training mode, as search runs)"
        if cfg.batchnorm == "train"
        else "running statistics of the warm-up (evaluation mode)",
        "reward": "REINFORCE-type estimators get R = -L(Z) on the same batch",
        "single_path_ms": unit * 1e3,
        "skipped": skipped,
        "device": str(device),
        "torch": torch.__version__,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    write_lab(record.dir, rows, curves, {**meta, "wall_s": time.perf_counter() - started})
    log.info("%d rows in %.0f s -> %s", len(rows), time.perf_counter() - started, record.dir / "lab.csv")
    return meta


@hydra.main(version_base=None, config_path="conf", config_name="estimator_lab")
def main(cfg: DictConfig) -> None:
    with cli.user_errors():
        try:
            experiment(cfg)
        except UserError:  # a refusal leaves no folder a report would list as an unfinished record
            discard_refused(RunRecord(HydraConfig.get().runtime.output_dir), f"{HydraConfig.get().job.name}.log")
            raise


if __name__ == "__main__":
    note_existing_dirs(sys.argv[1:])
    cli.entry(main)
