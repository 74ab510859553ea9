"""Which code a file may make robust-mc run.

Every file robust-mc reads (a checkpoint, an ensemble, a curve run, the pairs of a bench) records
the architecture that built its networks. A registered name (the zoo) is always honoured: its code
ships with robust-mc. An import spec (``package.module:Name`` or ``path/file.py:Name``) imports
and runs code, so a file may name one only when the user named the same spec (``--arch``, or a
config they passed) or allowed any with ``--trust-code``. The check runs before anything is
imported; loading weights with ``weights_only=True`` is not enough on its own, because the file
would still choose the code that builds the network.

Example::

    trust = CodeTrust.from_user(arch="nets/wide.py:WideNet", trust_code=False)
    trust.check("nets/wide.py:WideNet", "a.pt")     # allowed: the user named it
    trust.check("subprocess:Popen", "evil.pt")      # UserError, nothing imported
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from robust_mc.errors import UserError, home_of
from robust_mc.models._registry import is_registered


def canonical_spec(arch: str) -> str:
    """``arch`` in one spelling: a file spec with its absolute path, anything else as written."""
    arch = arch.strip()
    location, sep, name = arch.rpartition(":")
    if sep and location.endswith(".py"):
        return f"{Path(home_of(location)).resolve()}:{name}"
    return arch


@dataclass(frozen=True)
class CodeTrust:
    """The import specs that files may name: those the user ``named``, or any with
    ``any_code`` (``--trust-code``). Registered architectures need neither."""

    named: tuple[str, ...] = ()
    any_code: bool = False

    @classmethod
    def from_user(cls, arch: str | None = None, trust_code: bool = False,
                  also: tuple[str | None, ...] = ()) -> CodeTrust:
        """The trust the user expressed: the ``--arch`` they typed (and specs from configs they
        passed, ``also``) and ``--trust-code``."""
        named = tuple(canonical_spec(a) for a in (arch, *also) if a)
        return cls(named, trust_code)

    def user_named(self, arch: str) -> bool:
        """The user named this spec themselves: a factory function is then acceptable too."""
        return canonical_spec(arch) in self.named

    def allows(self, arch: str) -> bool:
        return is_registered(arch) or self.any_code or self.user_named(arch)

    def check(self, arch: str, source: str) -> None:
        """Refuse, before anything is imported, an import spec that ``source`` (a file) names
        and the user did not allow."""
        if not self.allows(arch):
            raise UserError(f"{source} names code to import as its architecture ({arch!r}); a "
                            f"file never chooses code to run: if you trust that code, pass "
                            f"--arch {arch} (or --trust-code)")
