"""docs/design.md's extension table, checked: a new architecture, evaluation attack, alignment
method, objective or tracing rule is one registered function, in one place (here, the test),
and the flag that chooses it offers it and the library uses it. (Curve kinds, datasets and
training attacks have such tests beside their code: test_curves, test_data, test_attack_contract.)
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robust_mc import cli


def gated(h: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Units gated by the matching units of another tensor: no rule knows it, and with two
    tensors in it the tracer cannot probe it, so it refuses it until a rule says what it does."""
    return h * torch.sigmoid(g)


torch.fx.wrap("gated")  # traced as one call, as a library's own function would be


def help_of(capsys, command: str) -> str:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args([command, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_an_architecture_is_one_registered_factory():
    from robust_mc.config import TrainRunConfig, build_config
    from robust_mc.errors import UserError
    from robust_mc.models import create_model
    from robust_mc.models._registry import MODELS, register_model

    with MODELS.scoped():
        @register_model(bounds={"hidden": (1, 64)})
        def probe_net(num_classes: int = 10, in_channels: int = 1, width: float = 1.0,
                      image_size: int = 8, hidden: int = 16) -> nn.Module:
            return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, hidden),
                                 nn.ReLU(), nn.Linear(hidden, num_classes))

        with pytest.raises(UserError, match="probe_net"):  # --arch's list of the zoo
            create_model("probe_ne", num_classes=3, in_channels=1, mean=[0.0], std=[1.0])
        assert build_config(TrainRunConfig, None, {"model.arch": "probe_net"})
        model = create_model("probe_net", num_classes=3, in_channels=1, mean=[0.0], std=[1.0],
                             image_size=4, kwargs={"hidden": 5})
        assert model(torch.rand(2, 1, 4, 4)).shape == (2, 3)


def test_an_evaluation_attack_is_one_registered_builder(capsys):
    from robust_mc.attacks import build_attack
    from robust_mc.attacks.spec import EVAL_ATTACKS, Param, register_attack

    with EVAL_ATTACKS.scoped():
        @register_attack("probe-shift", "every pixel moved by a fraction of eps",
                         fraction=Param("float", 1.0))
        def _shift(eps: float, norm: str, num_classes: int, fraction: float):
            return lambda model, x, y: (x + fraction * eps).clamp(0, 1)

        assert "probe-shift" in help_of(capsys, "eval")
        x = torch.zeros(2, 1, 4, 4)
        adv = build_attack("probe-shift:fraction=0.5", eps=0.2)(None, x, None)
        assert torch.allclose(adv, torch.full_like(x, 0.1))


def test_an_alignment_method_is_one_registered_function(capsys):
    from robust_mc.core.align import METHODS, align, register_alignment
    from robust_mc.core.permutation import trace_permutation_spec
    from robust_mc.models import create_model

    used = []
    with METHODS.scoped():
        @register_alignment("probe-identity")
        def _identity(model_a, model_b, spec, corr):
            used.append(True)
            return {space.name: torch.arange(space.size) for space in spec}

        assert "probe-identity" in help_of(capsys, "align")
        torch.manual_seed(0)
        a, b = (create_model("mlp", num_classes=3, in_channels=1, mean=[0.0], std=[1.0],
                             image_size=4, kwargs={"hidden": 6}).eval() for _ in range(2))
        x = torch.rand(8, 1, 4, 4)
        spec = trace_permutation_spec(a, x[:2])
        result = align(a, b, [(x, torch.zeros(8, dtype=torch.long))], method="probe-identity",
                       spec=spec)
        assert used and all(torch.equal(p, torch.arange(len(p))) for p in result.perm.values())


def test_an_objective_is_one_registered_factory(capsys, runtime):
    from robust_mc.config import TrainRunConfig, build_config
    from robust_mc.models import create_model
    from robust_mc.train.objectives import OBJECTIVES, register_objective
    from robust_mc.train.tasks import EndpointTask

    with OBJECTIVES.scoped():
        @register_objective("probe-clean-twice")
        def _twice(**_):
            def loss(net, x, y):
                logits = net.logits(x)
                return 2 * nn.functional.cross_entropy(logits, y), (logits.argmax(1) == y).sum()
            return loss

        assert "probe-clean-twice" in help_of(capsys, "train")
        cfg = build_config(TrainRunConfig, None, {"objective.name": "probe-clean-twice"})
        torch.manual_seed(0)
        model = create_model("mlp", num_classes=3, in_channels=1, mean=[0.0], std=[1.0],
                             image_size=4)
        x, y = torch.rand(5, 1, 4, 4), torch.zeros(5, dtype=torch.long)
        loss, _ = EndpointTask(model, model, cfg.attack, runtime, objective=cfg.objective.name)(
            x, y)
        with torch.no_grad():
            expected = 2 * nn.functional.cross_entropy(model.train()(x), y)
        assert torch.allclose(loss.detach(), expected, rtol=1e-5)  # float32, same operations


def test_a_tracing_rule_is_one_registered_function(monkeypatch):
    """A function the tracer does not know stops it in one line; a rule for it, registered
    where its family of rules lives, lets the network trace (and permute exactly)."""
    from robust_mc.core.permutation import trace_permutation_spec
    from robust_mc.core.spec import permute_model
    from robust_mc.core.tracing import rulebook
    from robust_mc.errors import UserError

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.gate, self.fc2 = nn.Linear(4, 6), nn.Linear(4, 6), nn.Linear(6, 2)

        def forward(self, x):
            x = x.flatten(1)
            return self.fc2(gated(self.fc1(x), self.gate(x)))

    x = torch.rand(3, 1, 2, 2)
    with pytest.raises(UserError, match="gated"):
        trace_permutation_spec(Net(), x)
    monkeypatch.setattr(rulebook, "FUNCTION_RULES", dict(rulebook.FUNCTION_RULES))

    @rulebook.for_functions(gated)
    def _gated(trace, node):  # entry by entry: both inputs' units are the output's
        h, g = trace.tensor(node, 0), trace.tensor(node, 1)
        return trace.broadcast([h, g], len(h), f"'{node.name}'")

    net = Net()
    spec = trace_permutation_spec(net, x)
    assert [space.size for space in spec] == [6]  # fc1's and gate's units: one space
    before = net(x)
    permute_model(net, spec, {space.name: torch.randperm(space.size) for space in spec})
    assert torch.allclose(net(x), before, rtol=1e-5, atol=1e-6)  # sums in another order


def test_a_command_is_one_module_and_only_the_one_that_runs_is_imported(tmp_path, monkeypatch):
    """A module with a ``HELP`` literal in ``commands/`` is a command; ``robust-mc --help``
    lists it from its source without importing it (nor torch), and running it imports it."""
    import subprocess
    import sys

    from robust_mc import commands

    module = tmp_path / "probe_cmd.py"
    module.write_text('ORDER = 5\nDISTRIBUTED = True\nHELP = ("a probe " "command")\n'
                      "IMPORTED = True\n\n"
                      "def add_arguments(p):\n    p.add_argument('--n', type=int, default=1)\n\n"
                      "def run(args):\n    print('ran', args.n)\n    return 0\n")
    monkeypatch.setattr(commands, "__path__", [*commands.__path__, str(tmp_path)])
    found = commands.commands()
    assert next(iter(found)) == "probe_cmd" and found["probe_cmd"].help == "a probe command"
    assert "probe_cmd" in cli.distributed_commands()
    assert "robust_mc.commands.probe_cmd" not in sys.modules
    assert cli.main(["probe_cmd", "--n", "3"]) == 0
    assert sys.modules.pop("robust_mc.commands.probe_cmd").IMPORTED

    listing = ("import sys; from robust_mc import cli\n"
               "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
               "heavy = [m for m in sys.modules\n"
               "         if m == 'torch' or m.startswith('robust_mc.commands.')]\n"
               "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", listing], capture_output=True, text=True,
                         check=True).stdout
    assert "HEAVY []" in out and "connect" in out
