import pytest
import torch
import torch.nn.functional as F

from robust_mc.attacks import PGD, attack_mode, build_attack, list_attacks, parse_attack_spec, pgd
from robust_mc.errors import UserError
from robust_mc.evaluation.robustness import evaluate_model
from robust_mc.models import create_model
from robust_mc.store.model_building import build_model


def small_model():
    torch.manual_seed(0)
    return create_model("cnn", num_classes=10, in_channels=1, mean=(0.3,), std=(0.4,),
                        width=0.5).eval()


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_stays_in_ball_and_unit_box_and_raises_loss(norm, random_start):
    model = small_model()
    x = torch.rand(32, 1, 8, 8)
    x[:4] = 0.0  # corners of the box: projection to [0, 1] must act
    x[4:8] = 1.0
    y = torch.randint(0, 10, (32,))
    eps = 0.1 if norm == "linf" else 0.5
    adv = pgd(model, x, y, eps=eps, step_size=eps / 4, steps=10, norm=norm,
              random_start=random_start)
    delta = (adv - x).flatten(1)
    size = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-6).all()
    assert adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        assert F.cross_entropy(model(adv), y) > F.cross_entropy(model(x), y)


def test_pgd_computes_no_parameter_gradients():
    model = small_model()
    pgd(model, torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), eps=0.1,
        step_size=0.02, steps=2)
    assert all(p.grad is None for p in model.parameters())


def test_train_mode_attack_leaves_running_statistics_alone():
    model = small_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with attack_mode(model, "train"):
        assert model.training
        pgd(model, torch.rand(8, 1, 8, 8), torch.zeros(8, dtype=torch.long), eps=0.1,
            step_size=0.02, steps=2)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_robust_never_exceeds_clean_and_equals_it_at_eps_zero(digits_endpoints, digits, runtime):
    model = build_model(digits_endpoints[0])
    test = digits.test
    for spec in ("pgd:steps=5", "fgsm", "none"):
        m = evaluate_model(model, test, build_attack(spec, eps=0.1), runtime)
        assert m.robust_acc <= m.clean_acc and m.robust_loss >= m.clean_loss - 1e-6
        zero = evaluate_model(model, test, build_attack(spec, eps=0.0), runtime)
        assert zero.robust_acc == zero.clean_acc == m.clean_acc
        assert zero.robust_loss == pytest.approx(zero.clean_loss)
    assert evaluate_model(model, test, build_attack("pgd:steps=5", eps=0.1), runtime).robust_acc \
        < m.clean_acc - 5


def test_our_pgd_agrees_with_torchattacks(digits_endpoints, digits, runtime):
    model = build_model(digits_endpoints[0])
    torch.manual_seed(0)
    ours = evaluate_model(model, digits.test, build_attack("pgd:steps=10", eps=0.1), runtime)
    torch.manual_seed(0)
    theirs = evaluate_model(model, digits.test, build_attack("ta-pgd:steps=10", eps=0.1), runtime)
    assert abs(ours.robust_acc - theirs.robust_acc) <= 2.0
    assert ours.robust_acc < ours.clean_acc


def test_restarts_never_weaken_the_attack(digits_endpoints, digits, runtime):
    model = build_model(digits_endpoints[1])
    torch.manual_seed(1)
    one = evaluate_model(model, digits.test, PGD(eps=0.1, step_size=0.025, steps=3), runtime)
    torch.manual_seed(1)
    three = evaluate_model(model, digits.test, PGD(eps=0.1, step_size=0.025, steps=3,
                                                   restarts=3), runtime)
    assert three.robust_loss >= one.robust_loss - 0.02


@pytest.mark.parametrize("spec, message", [
    ("pgdd", "did you mean 'pgd'"), ("pgd:stpes=3", "did you mean 'steps'"),
    ("pgd:steps=x", "integer"), ("pgd:alpha=9", "9/255"), ("pgd:steps", "key=value")])
def test_spec_typos_are_clear_errors(spec, message):
    with pytest.raises(UserError, match=message):
        parse_attack_spec(spec)


def test_registry_lists_the_documented_attacks():
    assert {"pgd", "fgsm", "apgd-ce", "apgd-dlr", "autoattack", "cw", "none"} <= set(list_attacks())


@pytest.mark.parametrize("spec", ["apgd-ce:steps=3", "square:queries=20", "pyautoattack"])
def test_library_attacks_run_on_channels_last_colour_batches(spec):
    """torchattacks and the reference AutoAttack reshape with .view(): they get NCHW memory."""
    torch.manual_seed(0)
    model = create_model("tinyten", num_classes=10, in_channels=3, mean=(0.5,) * 3,
                         std=(0.25,) * 3).to(memory_format=torch.channels_last).eval()
    x = torch.rand(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y = model(x).argmax(1)  # every image starts correctly classified: all are attacked
    adv = build_attack(spec, eps=8 / 255, num_classes=10)(model, x, y)
    assert adv.shape == x.shape and (adv - x).abs().max() <= 8 / 255 + 1e-6
