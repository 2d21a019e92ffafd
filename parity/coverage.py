"""Key coverage of a loaded Candle model against its checkpoint and the model's allow-list."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field


@dataclass
class Coverage:
    model: str
    file_keys: dict  # key -> (dtype, shape)
    requested: dict  # key -> dtype as stored
    unused: list[str]
    allowed_unused: dict[str, str] = field(default_factory=dict)  # key -> reason from the allow-list
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return (f"{self.model}: {len(self.file_keys)} keys in file, {len(self.requested)} read, "
                f"{len(self.allowed_unused)} unused on the allow-list"
                + ("" if self.ok else "\n  " + "\n  ".join(self.problems)))


def coverage(spec, cm) -> Coverage:
    c = Coverage(spec.name, cm.file_keys(), cm.requested_keys(), cm.unused_keys())
    if spec.weightless:
        if c.requested or c.file_keys:
            c.problems.append(f"a weightless kind must read nothing from an empty store; read {sorted(c.requested)[:5]}, "
                              f"file holds {sorted(c.file_keys)[:5]}")
    elif not c.requested:
        c.problems.append("Candle read no key at all")
    for k in c.unused:
        reason = next((r for p, r in spec.allow_unused.items() if fnmatch.fnmatchcase(k, p)), None)
        if reason is None:
            c.problems.append(f"unused key not on the allow-list: {k}")
        else:
            c.allowed_unused[k] = reason
    for k, dt in c.requested.items():
        if k not in c.file_keys:
            c.problems.append(f"read a key the file does not list: {k}")
        elif dt != c.file_keys[k][0]:
            c.problems.append(f"{k}: read as {dt}, stored as {c.file_keys[k][0]}")
    return c
