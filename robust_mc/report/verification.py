"""The verification table: each verified point's robust accuracy under the path's attack and
under AutoAttack, the gradient-masking checks, and what a flagged point calls for."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from robust_mc.evaluation.verification import PointVerification, Verification


def verification_table(verification: Verification) -> Table:
    reference = verification.reference or "not installed"
    table = Table(title=f"verification at eps {verification.eps * 255:.3g}/255 "
                        f"(reference AutoAttack: {reference})")
    for name in ("t", "role", "n", "clean", "path", "AA", "AA-ta", "gap", "checks", ""):
        table.add_column(name, justify="left" if name in ("role", "checks", "") else "right")
    for p in verification.points:
        reference_acc = "-" if p.autoattack is None else f"{p.autoattack:.2f}"
        failed = [c.name for c in p.failed]
        checks = f"{len(p.checks) - len(failed)}/{len(p.checks)}" + (
            f" [red]{', '.join(failed)}[/]" if failed else "")
        table.add_row(f"{p.t:.2f}", ",".join(p.roles), str(p.images), f"{p.clean_acc:.2f}",
                      f"{p.path_robust_acc:.2f}", reference_acc,
                      f"{p.autoattack_torchattacks:.2f}", f"{p.gap:+.2f}", checks,
                      "[bold red]FLAGGED[/]" if p.flagged else "[green]ok[/]")
    table.caption = ("robust accuracy (%) on n test images under the run's own attack (path), "
                     "standard AutoAttack (AA) and torchattacks' AutoAttack (AA-ta); gap = path "
                     "- AA; checks: gradient-masking checks passed")
    return table


def flagged_lines(point: PointVerification) -> list[str]:
    """What a flagged point failed, what each failed check saw, and the hints."""
    lines = [f"t={point.t:.2f} ({','.join(point.roles)}): {c.name}: {c.saw}"
             for c in point.failed]
    lines += [f"t={point.t:.2f}: {hint}" for hint in point.hints]
    lines += [f"t={point.t:.2f}: reference AutoAttack warned: {w}"
              for w in point.reference_warnings]
    return lines


def print_verification(verification: Verification, console: Console | None = None) -> None:
    console = console or Console()
    console.print(verification_table(verification))
    for point in verification.flagged:
        for line in flagged_lines(point):
            console.print(f"  [bold red]![/] {line}", highlight=False)
    if verification.reference is None:
        console.print("  the reference AutoAttack is not installed: the AutoAttack column is "
                      "torchattacks'; pip install 'robust-mc[verify]' for the reference")
