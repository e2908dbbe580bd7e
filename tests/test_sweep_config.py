"""The sweep's search space and its refusals, before any Ray or training starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from unipose_ray.config import ConfigError, load_config
from unipose_ray.evaluation.cross_dataset import EvalSet
from unipose_ray.workflows.preflight import check_sweep
from unipose_ray.workflows.sweep_trial import (
    concurrent_trials,
    param_space,
    short_params,
    total_trials,
    trial_config,
)

COCO = EvalSet("coco", "coco.parquet", ann_file="coco.json", unified_ann_file="coco21.json")
MPII = EvalSet("mpii", "mpii.parquet", unified_ann_file="mpii21.json")


@pytest.mark.parametrize(("override", "named"), [
    ("sweep.sizes=[]", "sweep.sizes"),
    ("sweep.sizes=[xl]", "sweep.sizes"),
    ("sweep.search=bayes", "sweep.search"),
    ("sweep.w_gt=[0,1]", "sweep.w_gt"),
    ("sweep.w_teacher=[1.0,0.5]", "sweep.w_teacher"),
    ("sweep.w_gt=[0.1,0.5,1.0]", "sweep.w_gt"),
    ("sweep.lr=[0.001]", "sweep.lr"),
    ("sweep.num_samples=0", "sweep.num_samples"),
    ("sweep.mode=best", "sweep.mode"),
])
def test_an_empty_or_invalid_search_space_is_refused(override, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config("demo_sweep", [override])


def test_an_empty_grid_and_a_grid_of_the_wrong_width_are_refused():
    with pytest.raises(ConfigError, match="sweep.grid is empty"):
        load_config("demo_sweep", ["sweep.search=grid", "sweep.grid=[]"])
    config = load_config("demo_sweep", ["sweep.search=grid", "sweep.grid=[[0.45,0.25]]",
                                        "teacher_cache.uri=/tmp/c"])
    with pytest.raises(ConfigError, match=r"\(w_gt, coco, mpii\) tuples of 3 numbers"):
        check_sweep(config, (COCO, MPII))


def test_the_grid_holds_the_papers_weights_every_size_and_learning_rate():
    config = load_config("demo_sweep", ["sweep.search=grid", "sweep.sizes=[t,s]",
                                        "sweep.lr=[0.001,0.004]", "sweep.num_samples=2"])
    space = param_space(config)
    assert space["weights"]["grid_search"][0] == {"w_gt": 0.45, "coco": 0.25, "mpii": 0.45}
    assert space["size"]["grid_search"] == ["t", "s"]
    assert space["lr"]["grid_search"] == [0.001, 0.004]
    assert total_trials(config) == 1 * 2 * 2 * 2


def test_random_search_draws_weights_in_their_ranges():
    config = load_config("demo_sweep", ["sweep.w_gt=[0.2,0.3]", "sweep.lr=[1e-4,1e-3]"])
    space = param_space(config)
    for _ in range(50):
        w = space["weights"]["w_gt"].sample()
        assert 0.2 <= w <= 0.3 and 1e-4 <= space["lr"].sample() <= 1e-3
        assert 0.05 <= space["weights"]["mpii"].sample() <= 1.0
    assert total_trials(config) == config.sweep.num_samples


def test_a_trial_config_carries_its_weights_size_and_learning_rate():
    config = load_config("demo_sweep")
    params = {"weights": {"w_gt": 0.7, "coco": 0.1, "mpii": 0.3}, "size": "s", "lr": 3e-3}
    trial = trial_config(config, params, "demo_sweep_abc_00001")
    assert trial.loss.w_gt == 0.7 and trial.student.size == "s" and trial.optim.lr == 3e-3
    assert {t.name: t.weight for t in trial.teachers} == {"coco": 0.1, "mpii": 0.3}
    assert trial.run.name == "demo_sweep_abc_00001"
    assert config.loss.w_gt == 0.45  # the base is left alone
    assert short_params(params) == {"size": "s", "w1_gt": 0.7, "w_coco": 0.1, "w_mpii": 0.3,
                                    "lr": 3e-3}


def test_a_trial_of_another_size_gets_that_sizes_weight_decay_unless_one_was_set():
    """RTMPose's recipe decays t and s by 0.0, m by 0.05 (``RTMPOSE_WEIGHT_DECAY``): a sweep
    over sizes left to the recipe gives each trial its size's; a set value stays."""
    from unipose_ray.config.models import RTMPOSE_WEIGHT_DECAY

    params = {"weights": {"w_gt": 0.5, "coco": 0.5, "mpii": 0.5}, "size": "m"}
    recipe = load_config("paper")  # RTMPose-s, weight decay from the recipe
    assert recipe.optim.weight_decay == RTMPOSE_WEIGHT_DECAY["s"] != RTMPOSE_WEIGHT_DECAY["m"]
    assert trial_config(recipe, params, "x").optim.weight_decay == RTMPOSE_WEIGHT_DECAY["m"]
    fixed = load_config("paper", ["optim.weight_decay=0.01"])
    assert trial_config(fixed, params, "x").optim.weight_decay == 0.01


def test_concurrent_trials_follow_what_a_trial_takes():
    config = load_config("demo_sweep")  # a trial: driver 1 + worker 1 + crop actor 1
    assert concurrent_trials(config, 8) == 2 and concurrent_trials(config, 2) == 1
    assert concurrent_trials(load_config("demo_sweep", ["sweep.max_concurrent_trials=5"]),
                             2) == 5


def test_a_metric_that_is_never_reported_is_refused():
    config = load_config("demo_sweep", ["sweep.metric=val/coco_APP"])
    with pytest.raises(ConfigError, match=r"'val/coco_APP' is never reported.*val/coco_AP,"):
        check_sweep(config, (COCO, MPII))
    mpii_only = load_config("demo_sweep", ["sweep.metric=val/coco_AP"])
    with pytest.raises(ConfigError, match="never reported"):
        check_sweep(mpii_only, (MPII,))
    never = load_config("demo_sweep", ["run.val_every_epochs=5", "optim.epochs=4",
                                       "teacher_cache.uri=/tmp/c"])
    with pytest.raises(ConfigError, match="no trial would validate"):
        check_sweep(never, (COCO, MPII))
    no_teachers = load_config("demo_sweep", ["teachers=[]", "teacher_cache.uri=/tmp/c"])
    with pytest.raises(ConfigError, match="needs teachers"):
        check_sweep(no_teachers, (COCO, MPII))
    check_sweep(load_config("demo_sweep", ["teacher_cache.uri=/tmp/c"]), (COCO, MPII))


def _drawn_trials(config, n: int = 4) -> list[dict]:
    """The parameters of the first ``n`` trials the sweep's search algorithm hands Tune."""
    from ray.tune.experiment import Experiment

    from unipose_ray.workflows.sweep_trial import search_algorithm

    search = search_algorithm(config, concurrent=n)
    search.add_configurations([Experiment("drawn", run=lambda _: None, num_samples=n,
                                          config=param_space(config))])
    return [search.next_trial().config for _ in range(n)]


def test_random_search_draws_the_same_trials_for_the_same_run_seed():
    config = load_config("demo_sweep", ["sweep.include_base=false"])
    drawn = _drawn_trials(config)
    assert _drawn_trials(config) == drawn
    assert len({t["weights"]["w_gt"] for t in drawn}) == len(drawn)
    assert _drawn_trials(load_config("demo_sweep", ["sweep.include_base=false",
                                                    "run.seed=1"])) != drawn


def test_the_base_point_is_the_configs_own_choice():
    from unipose_ray.workflows.sweep_trial import base_point

    config = load_config("demo_sweep", ["sweep.sizes=[s,t]", "sweep.lr=[1e-4,1e-2]"])
    assert base_point(config) == {"weights": {"w_gt": 0.45, "coco": 0.25, "mpii": 0.45},
                                  "size": "s", "lr": config.optim.lr}


def test_every_swept_size_needs_a_backbone_that_fits_it():
    from unipose_ray.workflows.sweep_trial import resolve_backbones, trial_config

    released = "released/demo/cspnext-t_udp-demo-coco_64x96.pth"
    with pytest.raises(ConfigError, match=r"sizes \['s'\] have none; give sweep.backbones"):
        resolve_backbones(load_config("demo_sweep", ["sweep.sizes=[t,s]"]))
    with pytest.raises(Exception, match="size mismatch|shape"):  # RTMPose-t's file for s
        resolve_backbones(load_config("demo_sweep", ["sweep.sizes=[t,s]",
                                                     f"sweep.backbones.s={released}"]))
    config = resolve_backbones(load_config("demo_sweep", ["sweep.sizes=[t]"]))
    assert config.sweep.backbones == {"t": str(Path(released).resolve())}
    params = {"weights": {"w_gt": 0.7, "coco": 0.1, "mpii": 0.3}, "size": "t"}
    trial = trial_config(config, params, "x")
    assert trial.student.backbone_checkpoint == str(Path(released).resolve())
    scratch = load_config("demo_sweep", ["student.backbone_checkpoint=null", "sweep.sizes=[t,s]"])
    assert resolve_backbones(scratch).sweep.backbones == {}  # both from scratch, as asked


def test_a_sweep_stopped_with_ctrl_c_exits_130_saying_how_to_resume(load_job, monkeypatch,
                                                                     capsys, tmp_path):
    import unipose_ray.runtime.distributed
    import unipose_ray.workflows.sweep
    from unipose_ray.workflows.sweep import SweepInterrupted

    job = load_job("sweep")

    def interrupted(config, output_dir):
        raise SweepInterrupted("the sweep stopped with 2 trial(s) unfinished; run the same "
                               "command again (same --output-dir) to resume it")

    monkeypatch.setattr(unipose_ray.runtime.distributed, "init_ray", lambda address=None: None)
    monkeypatch.setattr(unipose_ray.workflows.sweep, "run_sweep", interrupted)
    with pytest.raises(SystemExit) as stopped:
        job.main(["--config", "demo_sweep", "--output-dir", str(tmp_path)])
    assert stopped.value.code == 130  # as a shell reports Ctrl+C
    assert "run the same command again" in capsys.readouterr().err


def test_a_resumed_sweeps_asha_judges_new_trials_against_the_finished_ones(tmp_path):
    """Tune does not save its scheduler: without its rungs a resumed ASHA would let a trial
    that cannot learn run on (judged against nothing)."""
    from unipose_ray.workflows.sweep_scheduler import ResumableASHA

    class Trial:
        def __init__(self, trial_id: str):
            self.trial_id = trial_id

    def asha(path):
        scheduler = ResumableASHA(str(path), time_attr="training_iteration", grace_period=1,
                                  reduction_factor=2, max_t=2)
        assert scheduler.set_search_properties("val/score", "max")
        return scheduler

    state = tmp_path / "asha_state.pkl"
    before = asha(state)  # the sweep before Ctrl+C: one trial finished
    good = Trial("good")
    before.on_trial_add(None, good)
    assert before.on_trial_result(None, good, {"training_iteration": 1, "val/score": 50.0}) == "CONTINUE"
    before.on_trial_complete(None, good, {"training_iteration": 2, "val/score": 60.0})

    for scheduler, wanted in ((asha(state), "STOP"), (asha(tmp_path / "new.pkl"), "CONTINUE")):
        bad = Trial("bad")  # the resumed sweep's next trial, worse at its first validation
        scheduler.on_trial_add(None, bad)
        assert scheduler.on_trial_result(None, bad, {"training_iteration": 1,
                                                     "val/score": 1.0}) == wanted
