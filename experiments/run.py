"""Run one method on one space: search, then finetune (one-stage) or retrain (two-stage).

    python experiments/run.py method=dsnas space=shufflenet
    python experiments/run.py method=dsnas estimator=uniform scale=tiny seed=1
    python experiments/run.py -m method=dsnas seed=0,1          # a sweep, one folder per job

The run folder (Hydra's, ``hydra.run.dir=...`` to choose) receives the run record of
the README ("The run record"): .hydra/, metrics.jsonl, summary.json, child.pt2 and child_state.pt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import cli  # noqa: F401  (sets the import path)
from methods.base import METHODS, Method
from methods.estimators.base import build_estimator
from methods.steps import path_digest
from nasbench import distributed
from nasbench.budget import BudgetMeter
from nasbench.checkpoint import (
    CHECKPOINT,
    SIDECAR,
    Checkpointer,
    check_config,
    load_checkpoint,
    run_config,
    truncate_metrics,
)
from nasbench.context import RunContext
from nasbench.data import load_data
from nasbench.device import compile_child, configure, resolve_device
from nasbench.device import precision as device_precision
from nasbench.errors import UserError
from nasbench.finish import finish_run
from nasbench.provenance import provenance, set_threads
from nasbench.records import RunRecord
from nasbench.spaces import SPACES
from nasbench.spaces.base import InputSpec, SearchSpace
from nasbench.tensorboard_log import TensorBoardSink
from nasbench.train import Trainer
from run_argv import TORCHRUN_SWEEP, discard_refused, prepare_argv

log = logging.getLogger("run")


def build_space(cfg: DictConfig, spec: InputSpec) -> SearchSpace:
    """The configured space at the configured scale (shared by run, inspect_arch and bench)."""
    presets = cfg.space.get("presets") or {}
    if cfg.scale.name not in presets:
        raise UserError(
            f"space {cfg.space.name!r} has no preset for scale={cfg.scale.name}; it has: {', '.join(presets)}"
        )
    preset = OmegaConf.to_container(presets[cfg.scale.name], resolve=True)
    options = OmegaConf.select(cfg, f"method.space_options.{cfg.space.name}") or {}
    unknown = sorted(set(options) - set(preset))
    if unknown:
        raise UserError(
            f"method.space_options.{cfg.space.name} sets {', '.join(unknown)}, which space {cfg.space.name} does not"
            f" have; its options: {', '.join(sorted(preset))}"
        )
    preset.update(OmegaConf.to_container(options, resolve=True) if options else {})
    return SPACES.get(cfg.space.name)(preset, spec)


POSITIVE_BUDGET_KEYS = ("batch_size", "eval_batch_size", "bn_recal_batches")
NON_NEGATIVE_BUDGET_KEYS = ("finetune_epochs", "retrain_epochs", "scored_archs", "warmup_epochs")


def space_budget_overrides(cfg: DictConfig, budget: dict) -> dict:
    """The space preset's ``budget_overrides`` at this scale (darts at cpu scale trains on a
    subset: an all-ops step of its supernet costs about 10 child steps on 2 CPU cores). They
    apply to every method alike, only when the budget is the scale's own (a named protocol such
    as budget=darts is left as it is) and only to keys the command line does not set; the run
    record lists them under the budget's ``space_overrides``."""
    preset = OmegaConf.select(cfg, f"space.presets.{cfg.scale.name}") or {}
    wanted = preset.get("budget_overrides") or {}
    if not wanted or budget.get("name") != cfg.scale.name:
        return {}
    try:
        given = {o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task}
    except ValueError:  # not under Hydra (a test calling this directly)
        given = set()
    unknown = sorted(set(wanted) - set(budget))
    if unknown:
        raise UserError(f"space {cfg.space.name}: budget_overrides sets {', '.join(unknown)}, which no budget has")
    applied = {k: v for k, v in OmegaConf.to_container(wanted).items() if f"budget.{k}" not in given}
    return {**applied, "space_overrides": applied} if applied else {}


def check_budget(cfg: DictConfig) -> dict:
    """The resolved shared budget; refuses impossible numbers and method configs that would
    change it for one method only (README, "Budgets")."""
    budget = OmegaConf.to_container(cfg.budget, resolve=True)
    budget.update(space_budget_overrides(cfg, budget))
    for key in POSITIVE_BUDGET_KEYS:
        if float(budget[key]) < 1:
            raise UserError(f"budget.{key}={budget[key]}: must be at least 1")
    for key in NON_NEGATIVE_BUDGET_KEYS:
        if float(budget[key]) < 0:
            raise UserError(f"budget.{key}={budget[key]}: must not be negative")
    if budget.get("retrain_batch_size") is not None and float(budget["retrain_batch_size"]) < 1:
        raise UserError(f"budget.retrain_batch_size={budget['retrain_batch_size']}: must be at least 1 (or null)")
    overlap = sorted(set(budget) & set(cfg.method) - {"name"})
    if overlap:
        raise UserError(
            f"method {cfg.method.name} sets {', '.join('method.' + k for k in overlap)}, which belong to the shared"
            " budget: every method trains under the same numbers; change them with budget.<key>=... for all methods"
        )
    augment = cfg.data.get("augment")  # an empty {} is falsy: test for None, not truth
    budget["augmentation"] = OmegaConf.to_container(augment) if augment is not None and budget.get("augment") else {}
    return budget


def prepare(cfg: DictConfig, record: RunRecord) -> tuple[type[Method], RunContext]:
    """Everything a run needs before the method starts (shared with experiments/consistency.py):
    the method's class, with the estimator checked before any data loads, and the context."""
    set_threads(cfg.get("threads"))
    method_cls = METHODS.get(cfg.method.name)
    estimator = build_estimator(cfg.estimator)
    method_cls.check_estimator(OmegaConf.to_container(cfg.method, resolve=True), estimator)  # before data loads
    device = resolve_device(cfg.device, job_index())
    dist_env, device = distributed.init(device)
    if dist_env.enabled and job_index() is not None:
        raise UserError(TORCHRUN_SWEEP)
    configure(device, cfg.precision, bool(cfg.compile), bool(cfg.cudnn_benchmark))
    torch.manual_seed(int(cfg.seed))  # the same on every rank: the same initial network
    data = load_data(cfg.data)
    space = build_space(cfg, data.spec)
    method_cls.bind_estimator(OmegaConf.to_container(cfg.method, resolve=True), estimator, space, device)
    budget = check_budget(cfg)
    meter = BudgetMeter(device, dist_env.world_size)
    trainer = Trainer(budget, data, device, meter, record.metrics_path, seed=int(cfg.seed), progress=bool(cfg.progress))
    if cfg.get("tensorboard") and dist_env.is_main:
        trainer.sinks.append(TensorBoardSink(record.dir / "tensorboard"))
    ctx = RunContext(
        space=space,
        data=data,
        device=device,
        meter=meter,
        trainer=trainer,
        record=record,
        seed=int(cfg.seed),
        budget=budget,
        method_cfg=OmegaConf.to_container(cfg.method, resolve=True),
        estimator=estimator,
        channels_last=bool(cfg.channels_last),
    )
    return method_cls, ctx


def check_inputs(cfg: DictConfig) -> None:
    """Values Hydra accepts as any type but a run needs as numbers: one line, before any work."""
    try:
        if isinstance(cfg.seed, bool) or int(cfg.seed) != float(cfg.seed):
            raise ValueError
    except (TypeError, ValueError):
        raise UserError(f"seed={cfg.seed}: give a whole number (seed=0, or a sweep: seed=0,1,2)") from None


def run(cfg: DictConfig) -> dict:
    """One run; a refusal (:class:`UserError`) before the run wrote anything of its own removes the
    folder Hydra made for it, so reports never list refused configurations as unfinished runs."""
    record = RunRecord(HydraConfig.get().runtime.output_dir)
    try:
        return run_in(cfg, record)
    except UserError:
        if distributed.launched_env().is_main:
            discard_refused(record)
        raise


def run_in(cfg: DictConfig, record: RunRecord) -> dict:
    check_inputs(cfg)
    record.guard(bool(cfg.overwrite))
    config = run_config(OmegaConf.to_container(cfg, resolve=True))  # what a resumption must share
    saved = saved_checkpoint(cfg, config, record)  # checked before any data loads
    method_cls, ctx = prepare(cfg, record)
    space, data = ctx.space, ctx.data
    ck = start_checkpoints(cfg, config, ctx, saved)
    started = time.perf_counter() - ck.elapsed_before  # wall_s covers every part of an interrupted run
    log.info(
        "%s + %s estimator on %s (%s scale), %s, device %s -> %s",
        cfg.method.name,
        cfg.estimator.name,
        space.name,
        cfg.scale.name,
        data.name,
        ctx.meter.device_name(),
        record.dir,
    )
    started_from = provenance(ctx.device)  # the code that starts running, not what the folder holds at the end
    result = method_cls(ctx).run()
    ranks = rank_agreement(ctx, result.arch, result.search_acc, result.extra)
    identity = {
        "method": cfg.method.name,
        "estimator": cfg.estimator.name,
        "space": space.name,
        "data": data.name,
        "scale": cfg.scale.name,
        "seed": int(cfg.seed),
        "one_stage": method_cls.one_stage,
        "budget": ctx.budget,
        "precision": device_precision(),
        "compile": compile_child(),
        "world_size": distributed.current().world_size,
        "provenance": started_from,
        "config": config,
    }
    extra = {**result.extra, **({"distributed": ranks} if ranks else {})}
    summary = finish_run(ctx, result.arch, result.search_acc, result.child, identity, extra, started)
    ck.finished()
    log.info(
        "arch %s | search_acc %.4f | final_acc %.4f | %.2f MMACs | %.3f device-hours | %.0f s -> %s",
        summary["arch"],
        summary["search_acc"],
        summary["final_acc"],
        summary["flops"] / 1e6,
        summary["total_device_hours"],
        summary["wall_s"],
        record.summary_path,
    )
    return summary


def saved_checkpoint(cfg: DictConfig, config: dict, record: RunRecord) -> dict | None:
    """The checkpoint this run resumes from: the run folder's, unless ``overwrite=true`` (which
    starts again and deletes it). ``resume=true`` with none is an error. Decided by rank 0."""
    if distributed.launched_env().is_main:
        path = record.dir / CHECKPOINT
        if cfg.overwrite:
            for name in (CHECKPOINT, SIDECAR):
                (record.dir / name).unlink(missing_ok=True)
        elif path.exists():
            state = load_checkpoint(record.dir)
            check_config(state, config, path)
            return {"dir": str(record.dir), "state": state}
        elif cfg.resume:
            raise UserError(
                f"resume=true, but {record.dir} holds no checkpoint.pt to resume; run without resume=true to start"
            )
    return None


def start_checkpoints(cfg: DictConfig, config: dict, ctx: RunContext, saved: dict | None) -> Checkpointer:
    """The run's checkpointer, resumed from ``saved`` if there is one, with signal handlers."""
    found = distributed.broadcast_object(saved["dir"] if saved else None)  # rank 0 decides
    run_dir = Path(distributed.broadcast_object(str(ctx.record.dir)))
    ck = Checkpointer(run_dir, config, float(cfg.checkpoint.minutes), ctx.record.metrics_path, ctx.meter)
    ctx.trainer.checkpoint = ck
    if found is not None:
        ck.resume(saved["state"] if saved else load_checkpoint(Path(found)))
        if distributed.current().is_main:
            truncate_metrics(ctx.record.metrics_path, int(ck.saved["metrics_bytes"]))
        log.info("resuming %s from its checkpoint (%s)", run_dir, ck.where())
    elif distributed.current().is_main:
        ctx.record.metrics_path.unlink(missing_ok=True)  # lines of a run that died before its first checkpoint
    if distributed.current().is_main:
        for tmp in run_dir.glob(".checkpoint.tmp-*"):  # a write that SIGKILL cut short (never renamed)
            tmp.unlink(missing_ok=True)
    ck.install_signal_handlers()
    return ck


def rank_agreement(ctx: RunContext, arch: Any, search_acc: float, extra: dict) -> dict | None:
    """In a distributed run: every rank's architecture, alpha and sampled-path digests, and
    whether they agree (they must: the same seed, the same sampler, alpha's averaged gradient)."""
    env = distributed.current()
    if not env.enabled:
        return None
    alpha = json.dumps(extra.get("alpha_probs")).encode()
    mine = {
        "rank": env.rank,
        "arch": ctx.space.encode(arch),
        "alpha_digest": hashlib.sha256(alpha).hexdigest()[:16],
        "search_acc": search_acc,
        **path_digest(),
    }
    ranks = distributed.gather_objects(mine)
    same = [{k: v for k, v in r.items() if k != "rank"} for r in ranks]
    agree = all(r == same[0] for r in same)
    if not agree:
        log.error("the ranks of this distributed run disagree: %s", ranks)
    return {"world_size": env.world_size, "backend": env.backend, "ranks_agree": agree, "ranks": ranks}


def job_index() -> int | None:
    """The job's number in a multirun sweep (None in a single run): parallel jobs on a host with
    several GPUs take one each (README, "Choosing what runs": device)."""
    hc = HydraConfig.get()
    return int(hc.job.num) if hc.mode == RunMode.MULTIRUN else None


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    with cli.user_errors():
        run(cfg)


if __name__ == "__main__":
    with cli.user_errors():
        sys.argv[1:] = prepare_argv(sys.argv[1:])
    cli.entry(main)
