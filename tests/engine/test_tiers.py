from engine.pipeline import load_style
from engine.tiers import TierController, TierPolicy, faces_to_redraw

POLICY = TierPolicy(budget_ms=20.0, down_after=5, up_after=10, up_headroom=0.6)


def test_steps_down_only_under_sustained_overload():
    ctl = TierController([3.0, 10.0, 25.0], start=2, policy=POLICY)
    for _ in range(4):
        assert ctl.observe(30.0) is None
    assert ctl.observe(19.0) is None  # one good frame resets the count
    for _ in range(4):
        assert ctl.observe(30.0) is None
    assert ctl.observe(30.0) == 1


def test_steps_up_only_after_sustained_headroom_for_the_next_tier():
    ctl = TierController([3.0, 10.0, 25.0], start=0, policy=POLICY)
    # 3 ms now, the next tier is ~3.3x: 10 ms < 0.6 * 20 -> headroom
    results = [ctl.observe(3.0) for _ in range(10)]
    assert results[:-1] == [None] * 9 and results[-1] == 1
    # at tier 1 (10 ms) the next is 2.5x -> 25 ms > budget: never steps up
    assert all(ctl.observe(10.0) is None for _ in range(100))
    assert ctl.index == 1


def test_no_oscillation_under_steady_load():
    ctl = TierController([5.0, 15.0], start=1, policy=POLICY)
    switches = [ctl.observe(22.0 if ctl.index == 1 else 7.0) for _ in range(300)]
    assert [s for s in switches if s is not None] == [0]


def test_auto_tier_starts_with_the_best_tier_that_fits(fixture_bundle):
    fast = load_style(fixture_bundle, "auto", "onnx", policy=TierPolicy(budget_ms=1000.0))
    assert fast.active.tier.id == "standard" and fast.controller is not None
    slow = load_style(fixture_bundle, "auto", "onnx", policy=TierPolicy(budget_ms=0.001))
    assert slow.active.tier.id == "light"
    fast.close()
    slow.close()


def test_a_crowd_over_budget_is_redrawn_stalest_first_in_turn():
    costs = {1: 8.0, 2: 8.0, 3: 8.0, 4: 8.0}
    stale = dict.fromkeys(costs, 0)
    rounds = []
    for _ in range(4):
        chosen = faces_to_redraw([(i, stale[i], costs[i]) for i in costs], budget_ms=20.0)
        rounds.append(sorted(chosen))
        stale = {i: 0 if i in chosen else s + 1 for i, s in stale.items()}
    assert rounds == [[1, 2], [3, 4], [1, 2], [3, 4]]  # two fit in 20 ms; every face waits one frame at most


def test_redraw_takes_every_face_within_budget_and_always_one():
    assert faces_to_redraw([(1, 0, 5.0), (2, 3, 5.0)], budget_ms=20.0) == {1, 2}
    assert faces_to_redraw([(1, 0, 50.0), (2, 3, 50.0)], budget_ms=20.0) == {2}  # the stalest, alone over budget
    assert faces_to_redraw([(1, 0, 50.0), (2, 0, 50.0)], budget_ms=None) == {1, 2}
    assert faces_to_redraw([], budget_ms=20.0) == set()
