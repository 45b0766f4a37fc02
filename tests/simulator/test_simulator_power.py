"""The simulator's own power model: units differ, heat and load matter, the PSU loses, truth counts hung miners."""

from __future__ import annotations

import pytest

from megawatch.agent.modeltable import load_model_table
from megawatch.simulator.behaviour import make_identity, snapshot
from megawatch.simulator.faults import make_fault
from megawatch.simulator.power import ELECTRICAL, MEASURE_ERROR, idle_power_w, make_unit_power, psu_wall_w

TABLE = load_model_table()
S19 = TABLE.lookup("Antminer S19 Pro")


def draw(index: int = 0, *, ambient_c: float = 25.0, load: float = 1.0, fault=None, seed: int = 3,
         dialect: str = "bmminer", model=S19):
    ident = make_identity(seed=seed, index=index, host="127.0.0.1", port=1, site="s", dialect=dialect, model=model,
                          ambient_c=ambient_c, allow_control=False)
    return snapshot(ident, seed=seed, tick=4, tick_s=5.0, load=load, boot_tick=0, booted_fresh=False, fault=fault)


def test_units_of_one_model_differ_by_a_few_percent_and_the_same_seed_gives_the_same_draw():
    draws = [draw(i).true_power_w for i in range(200)]
    assert len(set(draws)) == len(draws)  # not one figure for the model
    mean = sum(draws) / len(draws)
    assert max(draws) / mean - 1 > 0.02 and 1 - min(draws) / mean > 0.02
    assert all(abs(w / mean - 1) < 0.06 for w in draws)
    assert [draw(i).true_power_w for i in range(5)] == draws[:5]
    assert draw(0, seed=4).true_power_w != draws[0]


def test_the_true_draw_is_not_the_model_table_times_the_hashrate():
    # What an agent's J/TH estimate gives, miner by miner: wrong by a few percent at stock, either way.
    errors = [s.hashrate_hs * S19.joules_per_hash / s.true_power_w - 1 for s in (draw(i) for i in range(100))]
    assert min(errors) < -0.02 and max(errors) > 0.0
    assert all(abs(e) < 0.12 for e in errors)


def test_hotter_air_and_an_overheating_unit_draw_more():
    cool, warm, hot = (draw(7, ambient_c=c).true_power_w for c in (10.0, 25.0, 40.0))
    assert cool < warm < hot
    assert 1.02 < hot / cool < 1.12  # fans and chip leakage: a few percent over 30 °C
    overheating = draw(7, fault=make_fault("overheat", {})).true_power_w
    assert overheating > 1.03 * warm


def test_power_follows_frequency_more_than_linearly():
    stock = draw(2).true_power_w
    under, over = draw(2, load=0.8).true_power_w / stock, draw(2, load=1.2).true_power_w / stock
    assert 0.6 < under < 0.75  # 80 % frequency at a lower voltage: well under 80 % of the power
    assert 1.3 < over < 1.5
    assert draw(2, load=0.8).hashrate_hs / draw(2).hashrate_hs == pytest.approx(0.8, rel=0.02)


def test_the_psu_loses_a_few_percent_more_at_light_load():
    unit = make_unit_power(S19, dialect="bmminer", spread=0.5, sensor=0.5)
    rating = ELECTRICAL[S19.name].psu_rating_w
    efficiency = {share: share * rating / psu_wall_w(unit, share * rating) for share in (0.1, 0.5, 1.0)}
    assert 0.86 < efficiency[0.1] < 0.9 < efficiency[1.0] < efficiency[0.5] < 0.95
    # At stock and 25 °C the average unit draws the maker's figure x its model's bias: the PSU was solved for.
    assert draw(0).true_power_w == pytest.approx(S19.nominal_power_w * (1 + ELECTRICAL[S19.name].spec_bias),
                                                 rel=0.04)
    # A restarting unit: fans and control board through the PSU, more than their DC draw.
    assert idle_power_w(unit) > unit.fan_max_w + unit.control_w


def test_behaviour_faults_change_the_true_draw():
    stock = draw(5)
    surged = draw(5, fault=make_fault("power_surge", {"factor": 1.3}))
    assert surged.true_power_w == pytest.approx(stock.true_power_w * 1.3, rel=1e-9)
    assert surged.hashrate_hs == stock.hashrate_hs  # it says it hashes as ever
    dropped = draw(5, fault=make_fault("hashrate_drop", {"drop": 0.5}))
    # Half the chips stop: power falls by about half, not exactly (the fans and control board keep going,
    # the chips left run cooler and leak less, the PSU moves along its curve).
    ratio = dropped.true_power_w / stock.true_power_w
    assert 0.42 < ratio < 0.55 and ratio != pytest.approx(0.5, abs=0.005)


@pytest.mark.parametrize("dialect", sorted(MEASURE_ERROR))
def test_firmware_that_measures_reports_the_draw_within_its_sensor_error(dialect):
    model = {"btminer": "Whatsminer M30S++", "avalon": "Avalon A1246"}.get(dialect, "Antminer S19j Pro")
    snaps = [draw(i, dialect=dialect, model=TABLE.lookup(model)) for i in range(50)]
    errors = [s.power_w / s.true_power_w - 1 for s in snaps]
    assert all(abs(e) <= MEASURE_ERROR[dialect] + 1 / 2000 for e in errors)  # + the rounding to whole watts
    assert max(errors) - min(errors) > MEASURE_ERROR[dialect]  # each unit's sensor is off its own way


def test_a_model_without_electrical_figures_still_draws_its_own_way():
    spec = TABLE.lookup("Antminer S21")
    unknown = type(spec)(name="Antminer S99 Hydro", nominal_hashrate_hs=spec.nominal_hashrate_hs,
                         joules_per_hash=spec.joules_per_hash)
    draws = [draw(i, model=unknown).true_power_w for i in range(20)]
    assert all(0.9 < w / unknown.nominal_power_w < 1.15 for w in draws) and len(set(draws)) == 20


async def test_truth_counts_hung_and_restarting_miners_and_not_powered_off_ones(make_sim_fleet):
    sim = await make_sim_fleet(groups=(("bmminer", "Antminer S19 Pro"), ("btminer", "Whatsminer M30S++")),
                               sites=1, per_group=4)
    before = (await sim.truth())["sites"]["site-a"]
    by_index = {m.index: sim.miner(m.index) for m in sim.miners}
    hung, cut, restarting = sim.miners[0], sim.miners[4], sim.miners[5]
    hung_w = by_index[hung.index].snapshot().true_power_w
    cut_w = by_index[cut.index].snapshot().true_power_w
    restarting_w = by_index[restarting.index].snapshot().true_power_w
    sim.set_fault([hung], "hang")
    sim.set_fault([cut], "offline")
    sim.set_fault([restarting], "reboot", duration_s=600)
    after = (await sim.truth())["sites"]["site-a"]
    idle_w = idle_power_w(by_index[restarting.index].identity.power)
    # The hung miner keeps drawing and now counts as unobserved; the one without power draws nothing.
    assert after["power_w"] == pytest.approx(before["power_w"] - cut_w - restarting_w + idle_w, rel=1e-12)
    assert after["power_w_unobserved"] == pytest.approx(hung_w + idle_w, rel=1e-12)
    assert after["power_w"] == pytest.approx(
        after["power_w_reported_true"] + after["power_w_unmeasured"] + after["power_w_unobserved"], rel=1e-12)
    assert after["miners_hashing"] == before["miners_hashing"] - 2
    rows = {row["index"]: row["true_power_w"] for row in await sim.backend.miners()}
    assert (rows[hung.index], rows[cut.index], rows[restarting.index]) == (hung_w, 0.0, idle_w)
    assert sum(rows.values()) == pytest.approx(after["power_w"], rel=1e-12)
