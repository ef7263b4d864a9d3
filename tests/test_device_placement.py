"""Where the deployed child lives: the model evaluated for ``final_acc`` is
read back from child.pt2 and shares no storage with the trained child or with the CPU copy that
params and MACs are counted on, so moving it to a GPU cannot move them."""

from __future__ import annotations

import torch

from conftest import tiny_space
from nasbench.finish import export_child, load_deployed
from nasbench.flops import count_macs, count_params
from nasbench.records import RunRecord


def _storages(module: torch.nn.Module) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in (*module.parameters(), *module.buffers()) if t.numel()}


def test_the_deployed_child_shares_no_storage_with_the_counted_one(tmp_path) -> None:
    space = tiny_space("nb201")
    torch.manual_seed(0)
    trained = space.build_child(space.sample(torch.Generator().manual_seed(3))).to(memory_format=torch.channels_last)
    record = RunRecord(tmp_path)
    exported = export_child(record, trained, space.inputs.shape, {"arch": "x"})
    example = torch.zeros(1, *space.inputs.shape)
    counts = count_params(exported), count_macs(exported, example)
    deployed = load_deployed(record, torch.device("cpu"))
    assert _storages(deployed).isdisjoint(_storages(exported) | _storages(trained))
    assert _storages(exported).isdisjoint(_storages(trained))
    # the counted copy stays on the CPU, in the default memory format, with the same numbers
    assert all(t.device.type == "cpu" for t in (*exported.parameters(), *exported.buffers()))
    assert all(p.is_contiguous() for p in exported.parameters())
    assert (count_params(exported), count_macs(exported, example)) == counts
    x = torch.rand(4, *space.inputs.shape)
    with torch.no_grad():
        assert torch.allclose(deployed(x), exported.eval()(x), atol=1e-5)
