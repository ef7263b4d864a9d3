"""The consistency experiment: does search-stage accuracy predict accuracy after retraining?

    python experiments/consistency.py method=spos space=shufflenet n_archs=20
    python experiments/consistency.py method=dsnas space=shufflenet n_archs=20 retrain_from=<spos folder>
    python experiments/consistency.py method=darts space=nb201 data=cifar10   # NAS-Bench-201's shipped table

The protocol of the README ("Does search-stage accuracy predict retrain accuracy?"), each choice recorded in
``consistency.json`` beside the per-architecture table ``consistency.csv``:

1. The method's supernet: its search stage runs here (the same counted phases as in run.py), or
   ``supernet_from=<run folder>`` reuses the ``supernet.pt`` a run saved.
2. ``n_archs`` distinct architectures sampled uniformly with ``sample_seed`` (the same seed gives
   every method the same architectures), or ``sampling=stratified``: one per ground-truth
   accuracy quantile (NAS-Bench-201 only), or ``sampling=table``: every architecture of the
   ground truth (the sample of a table experiments/ground_truth.py built). With
   ``include_picked``, the method's own pick is measured too, in a row of its own (``sampled``
   false unless it was drawn anyway).
3. Search-stage accuracy: the child with inherited supernet weights after BatchNorm
   recalibration on ``budget.bn_recal_batches`` training batches, on the test set (the same
   measurement as summary.json's ``search_acc``).
4. Retrain accuracy: stand-alone training from scratch with the shared retrain recipe
   (``budget.retrain_epochs``; model init seeded by seed and architecture, so a retrain does not
   depend on the order or on the method), or NAS-Bench-201's 200-epoch test accuracy
   (space=nb201 on a NAS-Bench-201 data set: the table shipped in nasbench/tables/, or another
   with ``ground_truth=``). ``retrain_from=`` reuses the retrains of another consistency folder
   made under the same recipe.

Correlations, intervals and figures come from ``python analysis/report.py <folder>``.
"""

from __future__ import annotations

import logging
import time
import zlib
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import cli
from analysis.correlation import rank_correlations
from consistency_parts import (
    Row,
    retrain_recipe,
    reused_retrains,
    sample_archs,
    truth_file,
    truth_for,
    write_table,
)
from methods.base import Method
from methods.phases import retrain
from nasbench import distributed
from nasbench.context import RunContext
from nasbench.errors import UserError
from nasbench.evaluate import accuracy
from nasbench.flops import count_macs, count_params
from nasbench.nb201_truth import DATASETS
from nasbench.provenance import provenance
from nasbench.records import RunRecord, atomic_write_json
from nasbench.spaces.base import Arch
from nasbench.supernet import Supernet
from run import prepare

log = logging.getLogger("consistency")


def searched_supernet(cfg: DictConfig, method: Method, ctx: RunContext) -> tuple[Supernet, Arch, str]:
    """The supernet to score and the method's pick: searched here, or loaded from a run folder."""
    if not cfg.supernet_from:
        outcome = method.search_stage()
        return outcome.supernet, outcome.arch, "searched in this run (the method's counted search phases)"
    folder = Path(str(cfg.supernet_from)).expanduser()
    state = RunRecord.peek(folder).load_supernet()
    expected = {
        "method": cfg.method.name,
        "space": ctx.space.name,
        "data": ctx.data.name,
        "budget": ctx.budget["name"],
        "search_epochs": ctx.budget.get("search_epochs"),  # recorded as the supernet's length: must be its own
    }
    for key, value in expected.items():
        if key in state and state[key] != value:
            option = f"budget.{key}" if key == "search_epochs" else key
            raise UserError(
                f"supernet_from={folder} holds a {key}={state[key]} supernet, but this run has {key}={value};"
                f" pass {option}={state[key]} or another folder"
            )
    supernet = ctx.space.build_supernet(one_stage=method.one_stage)
    try:
        supernet.load_state_dict(state["state_dict"])
    except RuntimeError:
        raise UserError(
            f"supernet_from={folder}: its weights do not fit this {ctx.space.name} supernet (another scale or"
            " space preset?); pass the scale the run used"
        ) from None
    return ctx.place(supernet), ctx.space.decode(state["arch"]), f"loaded from {folder}"


def retrain_accuracy(ctx: RunContext, arch: Arch, replica: int = 0) -> tuple[float, float]:
    """Test accuracy after a stand-alone retrain (uncounted: it measures, it is not the method).
    ``replica`` k > 0: the same recipe from another initialisation and data order (the noise
    ceiling's seeds); replica 0 is the retrain every earlier record made."""
    torch.manual_seed(ctx.seed * 1_000_003 + zlib.crc32(ctx.space.encode(arch).encode()) + replica * 104_729)
    started = time.perf_counter()
    child = retrain(ctx, arch, phase="consistency_retrain", counted=False)
    acc, _ = accuracy(child, ctx.trainer.test_loader(), ctx.device)
    return acc, time.perf_counter() - started


def noise_ceiling_of(rows: list[Row]) -> dict:
    """With two or more retrain seeds per architecture: Kendall tau between the first two seeds'
    accuracies (95% bootstrap interval over architectures), the tau no supernet can beat when
    scored against one seed; and the supernet's tau against each seed (its tau against the mean is
    ``kendall_tau``): retrained here with ``retrain_seeds`` >= 2, or read from a suite-built ground
    truth with seed columns. Nothing when the accuracies have one seed (NAS-Bench-201's table)."""
    if not rows or any(r.retrain_accs is None or len(r.retrain_accs) < 2 for r in rows):
        return {}
    seeds = len(rows[0].retrain_accs)
    ceiling = rank_correlations([r.retrain_accs[0] for r in rows], [r.retrain_accs[1] for r in rows], bootstrap=1000)
    per_seed = [
        rank_correlations([r.search_acc for r in rows], [r.retrain_accs[k] for r in rows], bootstrap=0)
        for k in range(seeds)
    ]
    return {
        "retrain_seeds": seeds,
        "noise_ceiling_tau": ceiling["kendall_tau"],
        "noise_ceiling_tau_lo": ceiling["kendall_tau_lo"],
        "noise_ceiling_tau_hi": ceiling["kendall_tau_hi"],
        "kendall_tau_per_seed": [c["kendall_tau"] for c in per_seed],
    }


def experiment(cfg: DictConfig) -> dict:
    started = time.perf_counter()
    record = RunRecord(HydraConfig.get().runtime.output_dir)
    result_path = record.dir / "consistency.json"
    if result_path.exists() and not cfg.overwrite:
        raise UserError(f"{record.dir} already holds a consistency experiment; choose another hydra.run.dir")
    n_archs = int(cfg.n_archs)
    if n_archs < 3:
        raise UserError(f"n_archs={n_archs}: a rank correlation needs at least 3 architectures")
    seeds = int(cfg.retrain_seeds)
    if seeds < 1 or (seeds > 1 and (truth_file(cfg) or cfg.retrain_from)):
        raise UserError(
            f"retrain_seeds={seeds}: give 1, or 2 and more to retrain each architecture with that many seeds"
            " (the noise ceiling), without ground_truth or retrain_from (whose accuracies have one seed here)"
        )
    method_cls, ctx = prepare(cfg, record)
    truth = truth_for(cfg, ctx)  # checked before the search: a bad table must not cost a search
    space = ctx.space
    archs = sample_archs(space, n_archs, int(cfg.sample_seed), str(cfg.sampling), truth, ctx.data.name)
    if len(archs) < 3:
        raise UserError(f"sampling={cfg.sampling} gives {len(archs)} architectures; a rank correlation needs 3")
    reused = reused_retrains(cfg.retrain_from, ctx, cfg) if truth is None else {}
    log.info("%s on %s: %d architectures -> %s", cfg.method.name, space.name, len(archs), record.dir)
    started_from = provenance(ctx.device)  # the code that starts the experiment (as run.py records it)
    method = method_cls(ctx)
    supernet, picked, supernet_source = searched_supernet(cfg, method, ctx)
    rows = [Row(arch=a, sampled=True, picked=a == picked) for a in archs]
    if cfg.include_picked and picked not in archs:
        rows.append(Row(arch=picked, sampled=False, picked=True))
    protocol = {
        "n_archs": len(archs),
        "sample_seed": int(cfg.sample_seed),
        "sampling": str(cfg.sampling),
        "supernet": supernet_source,
        "search_score": "test accuracy, inherited supernet weights, BatchNorm recalibrated on"
        f" {ctx.budget['bn_recal_batches']} training batches",
        "retrain_score": f"NAS-Bench-201 ground truth {truth.column(ctx.data.name)} ({truth.source})"
        if truth
        else f"test accuracy after {ctx.budget['retrain_epochs']} epochs of stand-alone training (shared recipe)",
        "retrain_recipe": retrain_recipe(ctx, cfg),
        "networks": "search_acc: the search network's child with inherited weights; retrain_acc, params and"
        " flops: the network a two-stage method retrains (space.build_eval_network: darts' evaluation network,"
        " the same child elsewhere)",
        "retrain_from": str(cfg.retrain_from) if cfg.retrain_from else None,
        "retrain_seeds": seeds,
        "include_picked": bool(cfg.include_picked),
        "accuracy_unit": "fraction",
    }
    identity = {
        "kind": "consistency",
        "method": cfg.method.name,
        "estimator": cfg.estimator.name,
        "space": space.name,
        "data": ctx.data.name,
        "scale": cfg.scale.name,
        "seed": int(cfg.seed),
        "one_stage": method_cls.one_stage,
        "budget": ctx.budget,
        "protocol": protocol,
        "picked_arch": space.encode(picked),
        "provenance": started_from,
    }
    for i, row in enumerate(rows):
        text = space.encode(row.arch)
        child = ctx.place(space.build_child(row.arch, supernet))
        row.search_acc = ctx.search_accuracy(child, phase="consistency_score")
        deployed = space.build_eval_network(row.arch)  # the network retrain_acc belongs to
        row.params = count_params(deployed)
        row.flops = count_macs(deployed.eval(), torch.zeros(1, *space.inputs.shape))
        if truth is not None and truth.has(text, ctx.data.name):
            source = "nb201" if ctx.data.name in DATASETS else "ground_truth"  # NAS-Bench-201's, or a suite-built table
            row.retrain_acc, row.retrain_source = truth.accuracy(text, ctx.data.name), source
            row.retrain_accs = truth.seed_accuracies(text, ctx.data.name)  # a suite-built table's seeds
            row.gt_rank = truth.rank(text, ctx.data.name)
        elif text in reused:
            row.retrain_acc, row.retrain_source = reused[text], "reused"
        else:
            accs, walls = zip(*(retrain_accuracy(ctx, row.arch, k) for k in range(seeds)))
            row.retrain_accs, row.retrain_wall_s = list(accs), sum(walls)
            row.retrain_acc, row.retrain_source = sum(accs) / len(accs), "retrained"
        log.info(
            "%d/%d %s%s: search %.4f, retrain %.4f (%s)",
            i + 1,
            len(rows),
            text,
            " (picked)" if row.picked else "",
            row.search_acc,
            row.retrain_acc,
            row.retrain_source,
        )
        write_table(record.dir / "consistency.csv", space, rows[: i + 1])  # a partial table survives a crash
        atomic_write_json(result_path, {**identity, "status": "running", "rows_done": i + 1})
    sampled = [r for r in rows if r.sampled]
    corr = rank_correlations([r.search_acc for r in sampled], [r.retrain_acc for r in sampled], bootstrap=0)
    result = {
        **identity,
        "status": "complete",
        "rows": len(rows),
        "kendall_tau": corr["kendall_tau"],
        "spearman_rho": corr["spearman_rho"],
        **noise_ceiling_of(sampled),
        "phases": ctx.meter.as_dicts(),
        "search_device_hours": ctx.meter.total_device_hours(),
        "device": ctx.meter.device_name(),
        "wall_s": time.perf_counter() - started,
        "torch": torch.__version__,
    }
    atomic_write_json(result_path, result)
    log.info(
        "Kendall tau %.3f, Spearman rho %.3f over %d sampled architectures (%.0f s) -> %s",
        corr["kendall_tau"],
        corr["spearman_rho"],
        len(sampled),
        result["wall_s"],
        record.dir / "consistency.csv",
    )
    return result


@hydra.main(version_base=None, config_path="conf", config_name="consistency")
def main(cfg: DictConfig) -> None:
    with cli.user_errors():
        experiment(cfg)


if __name__ == "__main__":
    with cli.user_errors():
        if distributed.launched_env().enabled:
            raise UserError("the consistency experiment runs in one process: start it without torchrun")
    cli.entry(main)
