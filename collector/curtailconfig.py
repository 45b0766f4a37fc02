"""A site's `curtailment:` settings (docs/curtailment.md): mode, safety limits and the operator's shed order."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from megawatch.common.configfile import Section

MODES = ("off", "plan", "approve", "auto")


@dataclass(frozen=True, slots=True)
class Priority:
    """Miners whose `host:port` matches `match` (a glob) shed in this order: lower first; `never` never."""

    match: str
    priority: int = 0
    never: bool = False


@dataclass(frozen=True, slots=True)
class CurtailSettings:
    mode: str = "plan"  # off: nothing; plan: computed and shown; approve: sent once approved; auto: sent
    margin_ratio: float = 0.03  # steer to allocation x (1 - margin), never to the allocation itself
    lead_s: float = 900.0  # a schedule window lowering the allocation within this is steered to already
    hold_s: float = 300.0  # headroom must last this long before a restore step
    hysteresis_ratio: float = 0.05  # restore only while the figure stays under limit x (1 - this) with the miner
    max_step_ratio: float = 0.1  # at most this share of the site's miners curtailed per cycle (at least one)
    restore_per_step: int = 2  # staggered restarts: at most this many per restore step (inrush)
    min_off_s: float = 300.0  # a curtailed miner stays off at least this long
    verify_s: float = 60.0  # a miner still hashing this long after its command did not comply
    priorities: tuple[Priority, ...] = ()

    def priority_of(self, miner: str) -> Priority | None:
        """The first entry matching `miner` (host:port), or None."""
        return next((p for p in self.priorities if fnmatchcase(miner, p.match)), None)


def load_curtailment(sec: Section) -> CurtailSettings:
    d = CurtailSettings()
    mode = sec.choice("mode", MODES, d.mode)
    margin = sec.number("margin_ratio", d.margin_ratio, minimum=0, maximum=0.5)
    lead = sec.number("lead_s", d.lead_s, minimum=0, maximum=6 * 3600)
    hold = sec.number("hold_s", d.hold_s, minimum=0)
    hysteresis = sec.number("hysteresis_ratio", d.hysteresis_ratio, minimum=0, maximum=0.5)
    step = sec.number("max_step_ratio", d.max_step_ratio, exclusive_minimum=0, maximum=1)
    restore = sec.integer("restore_per_step", d.restore_per_step, minimum=1, maximum=10_000)
    min_off = sec.number("min_off_s", d.min_off_s, minimum=0)
    verify = sec.number("verify_s", d.verify_s, exclusive_minimum=0)
    priorities = []
    for item in sec.sections("priorities"):
        match = item.string("match")
        priority = item.integer("priority", 0, minimum=-1000, maximum=1000)
        never = item.boolean("never", False)
        item.done()
        if match is not None:
            priorities.append(Priority(match, priority, never))
    sec.done()
    return CurtailSettings(mode=mode, margin_ratio=margin, lead_s=lead, hold_s=hold, hysteresis_ratio=hysteresis,
                           max_step_ratio=step, restore_per_step=restore, min_off_s=min_off, verify_s=verify,
                           priorities=tuple(priorities))
