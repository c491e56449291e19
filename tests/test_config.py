"""Experiment configs: defaults, every key round-trips through TOML, every bad value is named."""

import dataclasses
import glob
import os

import pytest
from hypothesis import given, settings, strategies as st

from metacore.app import config
from metacore.app.config import Config, ConfigError

EXAMPLES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "examples", "*.toml")))

# A valid non-default value for every key (section, key) -> value.
CHANGED = {
    (None, "name"): "other", (None, "seed"): 7, (None, "threads"): 2, (None, "output"): "out/x",
    (None, "dtype"): "float64",
    ("tasks", "family"): "logistic", ("tasks", "k_support"): 3, ("tasks", "k_query"): 4,
    ("tasks", "n_train"): 30, ("tasks", "n_test"): 9, ("tasks", "test_k_query"): 11,
    ("tasks", "amplitude"): [0.5, 1.0], ("tasks", "phase"): [0.0, 1.0],
    ("tasks", "x_range"): [-1.0, 2.0], ("tasks", "n_way"): 3, ("tasks", "rotations"): False,
    ("tasks", "n_features"): 6, ("tasks", "relatedness_noise"): 0.5, ("tasks", "noise"): 0.2,
    ("tasks", "path"): "a b.csv", ("tasks", "task_column"): "g", ("tasks", "target"): "t",
    ("tasks", "loss"): "logistic", ("tasks", "features"): ["u", "v"],
    ("tasks", "test_fraction"): 0.5, ("tasks", "support"): 0.25, ("tasks", "shuffle"): True,
    ("tasks", "stratify"): True, ("tasks", "standardize"): True, ("tasks", "episodes"): True,
    ("tasks", "mirror"): True,
    ("model", "hidden"): [8, 4], ("model", "activation"): "tanh", ("model", "norm"): "layer",
    ("model", "last_layer_scale"): 0.5,
    ("learner", "distance"): "sqeuclidean", ("learner", "reg"): 0.5, ("learner", "scale"): 10.0,
    ("learner", "cg_steps"): 3, ("learner", "per_step_rates"): "layer",
    ("learner", "multi_step_loss"): False, ("learner", "msl_anneal_steps"): 100,
    ("learner", "first_order_until"): 7,
    ("learner", "kind"): "anil", ("learner", "inner_lr"): 0.2, ("learner", "inner_steps"): 3,
    ("learner", "outer_lr"): 0.5, ("learner", "first_order"): True,
    ("optimizer", "kind"): "sgd", ("optimizer", "lr"): 0.05, ("optimizer", "momentum"): 0.9,
    ("optimizer", "weight_decay"): 0.01, ("optimizer", "clip_norm"): 1.5,
    ("optimizer", "nesterov"): True, ("optimizer", "betas"): [0.8, 0.99],
    ("optimizer", "eps"): 1e-6, ("optimizer", "schedule"): {"kind": "cosine", "steps": 100},
    ("optimizer", "groups"): {"model": {"lr": 0.002}},
    ("weighting", "kind"): "fixed", ("weighting", "alpha"): [0.25, 0.75],
    ("weighting", "settings"): {"temperature": 3.0},
    ("train", "steps"): 12, ("train", "meta_batch"): 5, ("train", "chunk"): 3,
    ("train", "validate_every"): 4, ("train", "checkpoint_every"): 6, ("train", "l2"): 0.001,
    ("evaluate", "steps"): [0, 2], ("evaluate", "lr"): 0.3, ("evaluate", "baselines"): ["joint"],
    ("evaluate", "joint_steps"): 10, ("evaluate", "joint_lr"): 0.01,
    ("evaluate", "joint_tasks"): 20, ("evaluate", "seed"): 3, ("evaluate", "plot"): False,
}

BAD = [  # (section, key, value, words the message must contain)
    (None, "seed", -1, ["seed", ">= 0"]), (None, "threads", 0, ["threads"]),
    (None, "dtype", "float16", ["dtype", "'float32'", "'float64'"]),
    (None, "name", "a/b", ["name", "slashes"]),
    ("tasks", "family", "omniglot", ["tasks.family", "'sinusoid'", "'digits'", "'omniglot'"]),
    ("tasks", "k_support", 0, ["tasks.k_support", ">= 1"]),
    ("tasks", "k_query", 2.5, ["tasks.k_query", "integer"]),
    ("tasks", "amplitude", [5.0, 1.0], ["tasks.amplitude", "lo <= hi"]),
    ("tasks", "n_way", 1, ["tasks.n_way"]), ("tasks", "rotations", "yes", ["tasks.rotations"]),
    ("tasks", "test_fraction", 0.0, ["tasks.test_fraction", "> 0"]),
    ("tasks", "loss", "hinge", ["tasks.loss", "'mse'"]),
    ("tasks", "support", 1.0, ["tasks.support", "fraction"]),
    ("tasks", "support", 0, ["tasks.support", ">= 1"]),
    ("tasks", "support", "half", ["tasks.support", "number"]),
    ("tasks", "standardize", 1, ["tasks.standardize", "true or false"]),
    ("tasks", "shuffle", True, ["tasks.shuffle", "'csv'"]),
    ("model", "hidden", [8, 0], ["model.hidden[1]", ">= 1"]),
    ("model", "activation", "gelu", ["model.activation", "'relu'", "'tanh'"]),
    ("learner", "kind", "protonets", ["learner.kind", "'maml'", "'protonet'", "'ridgehead'",
                                      "'imaml'", "'mamlpp'", "'multitask'"]),
    ("model", "norm", "group", ["model.norm", "'batch'", "'layer'"]),
    ("model", "last_layer_scale", "small", ["model.last_layer_scale", "number"]),
    ("tasks", "mirror", "yes", ["tasks.mirror", "true or false"]),
    ("learner", "inner_lr", -0.1, ["learner.inner_lr", ">= 0"]),
    ("learner", "first_order", 1, ["learner.first_order", "true or false"]),
    ("optimizer", "kind", "rmsprop", ["optimizer.kind", "'adam'", "'none'"]),
    ("optimizer", "lr", 0, ["optimizer.lr", "> 0"]),
    ("weighting", "kind", "gradnrm", ["weighting.kind", "'uniform'", "'gradnorm'"]),
    ("weighting", "settings", {"temprature": 1.0}, ["weighting.settings", "'uniform' takes"]),
    ("train", "steps", 0, ["train.steps", ">= 1"]), ("train", "l2", "x", ["train.l2", "number"]),
    ("evaluate", "steps", [], ["evaluate.steps", "at least 1"]),
    ("evaluate", "steps", [5, 0], ["evaluate.steps", "increasing"]),
    ("evaluate", "steps", [0, 1, 1], ["evaluate.steps", "each step count once"]),
    ("evaluate", "baselines", ["oracle"], ["evaluate.baselines[0]", "'scratch'", "'joint'"]),
    ("evaluate", "plot", "no", ["evaluate.plot"]),
]


def _set(data, section, key, value):
    (data if section is None else data.setdefault(section, {}))[key] = value


def test_defaults_are_the_maml_sinusoid_setting():
    cfg = config.from_dict({})
    assert (cfg.tasks.family, cfg.learner.kind, cfg.learner.inner_lr, cfg.learner.inner_steps,
            cfg.optimizer.kind, cfg.optimizer.lr, cfg.train.meta_batch, cfg.train.steps) == \
        ("sinusoid", "maml", 0.01, 1, "adam", 1e-3, 25, 70000)
    assert cfg.output_dir == "runs/experiment"


def test_every_key_is_covered_by_the_round_trip():
    keys = {(None, f.name) for f in dataclasses.fields(Config)
            if not dataclasses.is_dataclass(f.default_factory() if callable(f.default_factory)
                                            else None)}
    for f in dataclasses.fields(Config):
        if f.name in config._SECTIONS:
            keys |= {(f.name, g.name) for g in dataclasses.fields(config._SECTIONS[f.name])}
    assert keys == set(CHANGED)


@pytest.mark.parametrize("section, key", sorted(CHANGED, key=str))
def test_every_key_round_trips(section, key):
    data = {}
    _set(data, section, key, CHANGED[(section, key)])
    needs = {("tasks", "family"): [("tasks", "n_train", 30)],       # keys that need partners
             ("weighting", "kind"): [("weighting", "alpha", [1.0])],
             **{("tasks", k): [("tasks", "family", "csv"), ("tasks", "path", "x.csv")]
                + ([("tasks", "loss", "logistic")] if k == "stratify" else [])
                for k in ("support", "shuffle", "stratify", "standardize", "episodes")},
             ("weighting", "settings"): [("weighting", "kind", "dwa")],
             ("tasks", "mirror"): [("tasks", "family", "digits")],
             ("learner", "distance"): [("learner", "kind", "protonet"),
                                       ("tasks", "family", "digits")],
             ("learner", "scale"): [("learner", "kind", "ridgehead"),
                                    ("tasks", "family", "digits")],
             **{("learner", k): [("learner", "kind", "imaml")] for k in ("reg", "cg_steps")},
             **{("learner", k): [("learner", "kind", "mamlpp")]
                for k in ("per_step_rates", "multi_step_loss", "msl_anneal_steps",
                          "first_order_until")},
             ("optimizer", "momentum"): [("optimizer", "kind", "sgd")],  # SGD's settings
             ("optimizer", "nesterov"): [("optimizer", "kind", "sgd"),
                                         ("optimizer", "momentum", 0.9)]}
    for partner in needs.get((section, key), ()):
        _set(data, *partner)
    cfg = config.from_dict(data)
    value = getattr(cfg if section is None else getattr(cfg, section), key)
    assert value == CHANGED[(section, key)]
    again = config.loads(cfg.to_toml())
    assert again == cfg and again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize("section, key, value, words", BAD, ids=lambda v: str(v))
def test_every_bad_value_names_its_key(section, key, value, words):
    data = {}
    _set(data, section, key, value)
    with pytest.raises(ConfigError) as err:
        config.from_dict(data)
    for w in words:
        assert w in str(err.value)


def test_unknown_keys_and_sections_list_what_is_allowed():
    with pytest.raises(ConfigError, match="unknown key tasks.fmaily .*family"):
        config.from_dict({"tasks": {"fmaily": "digits"}})
    with pytest.raises(ConfigError, match="unknown key trian .*train"):
        config.from_dict({"trian": {}})
    with pytest.raises(ConfigError, match=r"\[model\] must be a table"):
        config.from_dict({"model": 3})


def test_rules_across_sections():
    with pytest.raises(ConfigError, match="tasks.n_train must be >= 1 for family 'linear'"):
        config.from_dict({"tasks": {"family": "linear"}})
    with pytest.raises(ConfigError, match="tasks.n_train must be >= 1 for learner.kind "
                                          "'multitask'"):
        config.from_dict({"tasks": {"family": "digits"}, "learner": {"kind": "multitask"}})
    assert config.from_dict({"tasks": {"family": "digits"}}).tasks.n_train == 0   # fresh
    with pytest.raises(ConfigError, match="tasks.mirror applies to tasks.family 'digits' "
                                          "with tasks.n_train = 0"):
        config.from_dict({"tasks": {"family": "digits", "n_train": 100, "mirror": True}})
    with pytest.raises(ConfigError, match="optimizer.kind 'none' is only for"):
        config.from_dict({"optimizer": {"kind": "none"}})
    with pytest.raises(ConfigError, match="meta_batch must be <= tasks.n_train"):
        config.from_dict({"tasks": {"n_train": 10}})
    with pytest.raises(ConfigError, match="tasks.path"):
        config.from_dict({"tasks": {"family": "csv"}})


def test_weighting_settings_are_checked_by_the_strategy():
    cfg = config.from_dict({"weighting": {"kind": "dwa", "settings": {"temperature": 3.0}}})
    assert cfg.weighting.strategy().temperature == 3.0
    with pytest.raises(ConfigError, match="weighting.settings.temprature .*temperature"):
        config.from_dict({"weighting": {"kind": "dwa", "settings": {"temprature": 3.0}}})
    with pytest.raises(ConfigError, match="weighting.settings.rule must be one of"):
        config.from_dict({"weighting": {"kind": "evaldriven", "settings": {"rule": "max"}}})


def test_load_names_the_file_and_overrides_apply(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text('name = "e"\n[train]\nsteps = 5\n')
    cfg = config.load(path, overrides=["train.steps=9", "tasks.family=sinusoid",
                                       "model.hidden=[3]"])
    assert (cfg.train.steps, cfg.model.hidden) == (9, [3])
    with pytest.raises(ConfigError, match="^--set train.steps must be >= 1, got 0$"):
        config.load(path, overrides=["train.steps=0"])
    with pytest.raises(ConfigError, match="key=value"):
        config.load(path, overrides=["train.steps"])
    path.write_text("name = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(path)


@pytest.mark.parametrize("key, bad", [("train.steps", "0"), ("train.steps", "'abc'"),
                                      ("tasks.k_support", "-1"), ("learner.inner_lr", "'x'"),
                                      ("model.hidden", "5"), ("train.lr", "-1.0")])
def test_a_bad_value_is_blamed_on_where_it_was_written(tmp_path, key, bad):
    """The same bad value named under the file's path when the file holds it, under --set when
    --set gave it (the file is then not at fault); either way the key is named."""
    section, name = key.split(".")
    path = tmp_path / "e.toml"
    path.write_text(f'name = "e"\n[{section}]\n{name} = {bad}\n')
    with pytest.raises(ConfigError) as in_file:
        config.load(path)
    assert str(in_file.value).startswith(f"{path}: ") and key in str(in_file.value)
    path.write_text('name = "e"\n')
    with pytest.raises(ConfigError) as in_set:
        config.load(path, overrides=[f"{key}={bad}"])
    assert str(in_set.value) == "--set " + str(in_file.value).removeprefix(f"{path}: ")


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_example_configs_are_valid(path):
    cfg = config.load(path)
    assert config.loads(cfg.to_toml()) == cfg


def test_there_is_an_example_for_every_learner():
    kinds = {config.load(p).learner.kind for p in EXAMPLES}
    assert kinds == set(config.LEARNERS)


def test_there_is_an_example_for_every_weighting_strategy():
    cfgs = [config.load(p) for p in EXAMPLES]
    kinds = {c.weighting.kind for c in cfgs if c.learner.kind == "multitask"}
    assert kinds == set(config.WEIGHTINGS)


def test_paths_in_a_file_are_resolved_against_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "exp"
    folder.mkdir()
    path = folder / "e.toml"
    path.write_text('output = "out"\n[tasks]\nfamily = "csv"\npath = "data/t.csv"\n'
                    '[learner]\nkind = "multitask"\n')
    monkeypatch.chdir(tmp_path)
    cfg = config.load("exp/e.toml")
    assert cfg.tasks.path == str(folder / "data" / "t.csv")
    assert cfg.output == str(folder / "out")
    # --set values are typed in the current folder: resolved against it (kept absolute, so the
    # run's config.toml reads back from any folder); absolute paths stay
    cfg = config.load(path, overrides=["tasks.path=mine.csv", f"output={tmp_path / 'o'}"])
    assert (cfg.tasks.path, cfg.output) == (str(tmp_path / "mine.csv"), str(tmp_path / "o"))
    # text without a file: relative to the current directory, as written
    assert config.loads('[tasks]\nfamily = "csv"\npath = "t.csv"\n').tasks.path == "t.csv"


def test_csv_keys_across_sections():
    with pytest.raises(ConfigError, match="tasks.stratify needs class labels"):
        config.from_dict({"tasks": {"family": "csv", "path": "x.csv", "stratify": True}})
    with pytest.raises(ConfigError, match="tasks.episodes applies to the meta-learners"):
        config.from_dict({"tasks": {"family": "csv", "path": "x.csv", "episodes": True},
                          "learner": {"kind": "multitask"}})
    cfg = config.from_dict({"tasks": {"family": "csv", "path": "x.csv", "support": 5}})
    assert cfg.tasks.support == 5 and isinstance(cfg.tasks.support, int)


def test_a_config_that_is_not_utf8_is_named(tmp_path):
    """A binary or Latin-1 file given as the config: a ConfigError naming the file, the offset
    of the first bad byte and that a config is UTF-8 text (never a bare decode error)."""
    path = tmp_path / "e.toml"
    path.write_bytes('name = "café"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert str(err.value).startswith(f"{path} is not UTF-8 text (byte b'\\xe9' at offset 11 ")


_toml_scalars = st.one_of(st.booleans(), st.integers(-2**63, 2**63 - 1),
                          st.floats(allow_nan=False, allow_infinity=False),
                          st.text(max_size=8))
_toml_keys = st.text(min_size=1, max_size=6)


@settings(max_examples=150, deadline=None)
@given(value=st.recursive(_toml_scalars,
                          lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                  st.dictionaries(_toml_keys, inner, max_size=3)),
                          max_leaves=8))
def test_toml_values_of_any_depth_read_back_as_written(value):
    """Config.to_toml writes every value through _toml_value: tables nested at any depth (inline
    tables, e.g. [optimizer.groups]'s per-group settings), lists of them, keys that need quotes."""
    text = f"k = {config._toml_value(value)}\n"
    assert config._toml().loads(text) == {"k": value}


def test_a_conflict_is_blamed_on_where_its_first_key_was_written(tmp_path):
    """A message names the key it is about first: train.meta_batch against tasks.n_train is blamed
    on the file when the file holds meta_batch, though --set gave n_train, and on --set when --set
    gave meta_batch."""
    path = tmp_path / "e.toml"
    path.write_text('name = "e"\n[train]\nmeta_batch = 20\n')
    with pytest.raises(ConfigError) as exc:
        config.load(path, overrides=["tasks.n_train=10"])
    assert str(exc.value).startswith(f"{path}: train.meta_batch must be <= tasks.n_train")
    path.write_text('name = "e"\n[tasks]\nn_train = 10\n')
    with pytest.raises(ConfigError) as exc:
        config.load(path, overrides=["train.meta_batch=20"])
    assert str(exc.value).startswith("--set train.meta_batch must be <= tasks.n_train")
