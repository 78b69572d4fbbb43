"""Compute-tier selection with hysteresis: step down under sustained overload, up after sustained headroom."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TierPolicy:
    """budget_ms: time per frame the stylizer may use. Windows are frame counts."""

    budget_ms: float = 20.0
    down_after: int = 15
    up_after: int = 90
    up_headroom: float = 0.6


class TierController:
    """Chooses among tiers ordered cheapest first, from measured inference times.

    A step down needs ``down_after`` consecutive frames over budget; a step up needs ``up_after``
    consecutive frames under ``up_headroom × budget × (cost ratio)``, so the next tier is expected to
    fit too. Oscillation between two tiers is impossible while the load is steady.
    """

    def __init__(self, tier_costs: list[float], start: int, policy: TierPolicy = TierPolicy()) -> None:
        if not tier_costs:
            raise ValueError("no tiers")
        self.costs = tier_costs
        self.index = max(0, min(start, len(tier_costs) - 1))
        self.policy = policy
        self._over = 0
        self._under = 0

    def observe(self, infer_ms: float) -> int | None:
        """Record one frame's stylizer time; returns the new tier index when a switch is due."""
        p = self.policy
        if infer_ms > p.budget_ms:
            self._over += 1
            self._under = 0
        else:
            self._over = 0
            nxt = self.index + 1
            ratio = self.costs[nxt] / max(self.costs[self.index], 1e-9) if nxt < len(self.costs) else None
            if ratio is not None and infer_ms * ratio < p.up_headroom * p.budget_ms:
                self._under += 1
            else:
                self._under = 0
        if self._over >= p.down_after and self.index > 0:
            self.index -= 1
            self._over = self._under = 0
            return self.index
        if self._under >= p.up_after and self.index < len(self.costs) - 1:
            self.index += 1
            self._over = self._under = 0
            return self.index
        return None


def faces_to_redraw(faces: list[tuple[int, int, float]], budget_ms: float | None) -> set[int]:
    """The faces a frame stylizes anew, from (track id, frames since it was last stylized, its expected
    stylizer ms); ``None`` as budget: all of them.

    The stalest go first (ties by track id, so a crowd is served in turn) while the frame's expected
    stylizer time stays within ``budget_ms``; at least one is always taken. The pipeline draws the others
    from their last stylized crops at their new placement: a crowd keeps the frame rate and every face
    follows its head, only expressions update less often.
    """
    if budget_ms is None:
        return {track_id for track_id, _, _ in faces}
    chosen: set[int] = set()
    spent = 0.0
    for track_id, _, ms in sorted(faces, key=lambda f: (-f[1], f[0])):
        if chosen and spent + ms > budget_ms:
            break
        chosen.add(track_id)
        spent += ms
    return chosen
