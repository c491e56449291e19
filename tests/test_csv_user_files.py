"""CSV files as users write them, through the loaders and `metacore predict`: line endings, quoting,
blank lines and unclosed quotes read back exactly or are refused at the line where the quote opens;
every error about a file names the argument it came from (--input, --support)."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metacore.app import config, experiment
from metacore.data.tabular import from_csv, read_csv

from test_cli_csv import FEATURES, experiment_file, make_data, write_csv

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

cell = st.one_of(st.integers(-10**6, 10**6).map(str),
                 st.floats(-1e6, 1e6, allow_nan=False).map(repr),
                 st.text(alphabet="ab ,\"\n", min_size=1, max_size=4))


def file_text(header, rows, newline, quoting, blank_tail):
    out = io.StringIO()
    csv.writer(out, lineterminator=newline, quoting=quoting).writerows([header, *rows])
    return out.getvalue() + newline * blank_tail


@SETTINGS
@given(data=st.data(), n_cols=st.integers(1, 4), newline=st.sampled_from(["\n", "\r\n"]),
       quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]), blank_tail=st.integers(0, 2))
def test_well_formed_files_read_back_with_each_rows_first_line(tmp_path, data, n_cols, newline,
                                                               quoting, blank_tail):
    """Quoted commas, quotes and line breaks inside fields, CRLF and trailing blank lines: every
    value reads back exactly as written (surrounding spaces kept), and each row's line is where
    its record starts."""
    header = [f"c{j}" for j in range(n_cols)]
    rows = data.draw(st.lists(st.lists(cell, min_size=n_cols, max_size=n_cols), min_size=1,
                              max_size=6))
    rows = [r for r in rows if "".join(r).strip()] or [["1"] * n_cols]
    path = tmp_path / "t.csv"
    path.write_bytes(file_text(header, rows, newline, quoting, blank_tail).encode())
    got_header, table = read_csv(path)
    assert got_header == header
    for j, h in enumerate(header):
        assert table[h] == [r[j] for r in rows]
    starts, line = [], 2
    for r in rows:
        starts.append(line)
        line += sum(v.count("\n") for v in r) + 1
    assert table.lines.tolist() == starts


@SETTINGS
@given(data=st.data(), n_cols=st.integers(1, 4), newline=st.sampled_from(["\n", "\r\n"]),
       final_newline=st.booleans())
def test_an_unclosed_quote_is_refused_at_the_line_it_opens(tmp_path, data, n_cols, newline,
                                                           final_newline):
    """A stray opening quote makes the csv module read the rest of the file as one field: the
    rows after it were lost (inside a task id, or a field count that blamed another line)."""
    header = [f"c{j}" for j in range(n_cols)]
    rows = data.draw(st.lists(st.lists(st.integers(0, 99).map(str), min_size=n_cols,
                                       max_size=n_cols), min_size=2, max_size=6))
    i = data.draw(st.integers(0, len(rows) - 1))
    j = data.draw(st.integers(0, n_cols - 1))
    rows[i][j] = '"' + rows[i][j]
    text = newline.join(",".join(r) for r in [header, *rows]) + (newline if final_newline else "")
    path = tmp_path / "t.csv"
    path.write_bytes(text.encode())
    with pytest.raises(ValueError, match=f"^line {i + 2} of {path} opens a quoted field "
                                         r"\(\"\) that is never closed"):
        read_csv(path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    make_data(folder)
    cfg = config.load(experiment_file(folder), overrides=["train.steps=2"])
    cfg.output = str(folder / "out")
    experiment.run_train(cfg, quiet=True)
    write_csv(folder / "ok.csv", [["a", 1.0, 2.0, 3.0, 0.5]], ["shop", *FEATURES, "sales"])
    return folder


BAD_FILES = {
    "folder": None,
    "empty": b"",
    "header only": b"shop,size,price,promo,sales\n",
    "binary": b"shop,size\n\x89PNG\x00\xff",
    "short row": b"shop,size,price,promo,sales\na,1,2\n",
    "unclosed quote": b"shop,size,price,promo,sales\na,\"1,2,3,4\nb,1,2,3,4\n",
}


@pytest.mark.parametrize("flag", ["--input", "--support"])
@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_predict_names_the_argument_of_a_bad_file(checkpoint, flag, kind):
    bad = checkpoint / f"bad {kind}.csv"
    if BAD_FILES[kind] is None:
        bad.mkdir(exist_ok=True)
    else:
        bad.write_bytes(BAD_FILES[kind])
    ok, out = str(checkpoint / "ok.csv"), checkpoint / "p.csv"
    paths = {"--input": ok, "--support": ok, flag: str(bad)}
    with pytest.raises((ValueError, IsADirectoryError)) as err:
        experiment.run_predict(str(checkpoint / "out" / "checkpoint.npz"), paths["--input"],
                               str(out), support_path=paths["--support"], quiet=True)
    assert f"{flag} {bad}" in str(err.value)
    assert not out.exists()


# --- tasks too small for the split: named by their id as written, and their line ---------------
def _tasks_file(path, sizes, ids):
    lines, where = ["task,x,y"], {}
    for tid, size in zip(ids, sizes):
        where[tid] = len(lines) + 1
        lines += [f"{tid},{r}.5,{r % 2}" for r in range(size)]
    path.write_text("\n".join(lines) + "\n")
    return where


@SETTINGS
@given(sizes=st.lists(st.integers(1, 6), min_size=2, max_size=8), k=st.integers(1, 7),
       data=st.data())
def test_a_support_count_beyond_a_task_names_the_task_by_its_id(tmp_path, sizes, k, data):
    ids = [f"0{i}" if data.draw(st.booleans()) else f"s{i}" for i in range(len(sizes))]
    _tasks_file(tmp_path / "d.csv", sizes, ids)
    for kw in ({"n_support": k}, {"support": k}):
        if k <= min(sizes):
            from_csv(tmp_path / "d.csv", task="task", target="y", **kw)
            continue
        with pytest.raises(ValueError) as err:
            from_csv(tmp_path / "d.csv", task="task", target="y", **kw)
        small = [t for t, s in zip(ids, sizes) if s < k]
        name = next(iter(kw))
        assert str(err.value).startswith(f"{name}: {k} support rows per task, but task "), err.value
        assert any(f"task {t!r} has only" in str(err.value) for t in small), err.value


TOML = """
[tasks]
family = "csv"
path = "d.csv"
task_column = "task"
target = "y"
support = 0.5
test_fraction = {test_fraction}
episodes = {episodes}
[model]
hidden = [4]
[learner]
kind = "{kind}"
[train]
steps = 1
meta_batch = 1
"""


@pytest.mark.parametrize("kind, episodes", [("maml", "false"), ("maml", "true"),
                                            ("reptile", "false"), ("multitask", "false")])
@pytest.mark.parametrize("test_fraction", [0.2, 0.5, 0.8])
def test_a_task_with_no_query_rows_is_named_by_its_id_and_line(tmp_path, kind, episodes,
                                                               test_fraction):
    """A one-row task cannot be scored: a meta-learner's training task or any held-out task is
    refused under tasks.support with its id and first line (the core said "task 0" of the
    training set); multitask trains on it."""
    where = _tasks_file(tmp_path / "d.csv", [4, 1, 4, 4, 4, 4], ["07", "007", "1", "2", "3", "4"])
    cfg = config.loads(TOML.format(kind=kind, episodes=episodes, test_fraction=test_fraction),
                       base_dir=tmp_path)
    try:
        exp = experiment.build(cfg)
    except config.ConfigError as exc:
        msg = str(exc)
        assert msg.startswith("tasks.support: ") and \
            f"task '007' (line {where['007']} of {tmp_path / 'd.csv'}) has 1 row" in msg, msg
        return
    assert kind == "multitask" and "007" in exp.train_tasks.names


@pytest.mark.parametrize("steps", [0, 1, 5])
def test_predict_refuses_steps_without_support_rows(checkpoint, steps):
    """--steps without --support was ignored: θ as trained predicted the rows."""
    out = checkpoint / "p.csv"
    with pytest.raises(ValueError, match=f"^--steps {steps}: .*give --support"):
        experiment.run_predict(str(checkpoint / "out" / "checkpoint.npz"),
                               str(checkpoint / "ok.csv"), str(out), steps=steps, quiet=True)
    assert not out.exists()


@pytest.mark.parametrize("folder", ["runs", "my runs", "it's here", "a\"b $x", "ü ñ/é"])
def test_the_resume_command_in_messages_reads_back_as_one_argument_per_path(tmp_path, folder):
    import shlex
    out = str(tmp_path / folder)
    words = shlex.split(experiment.resume_command(out))
    assert words == ["metacore", "train", f"{out}/config.toml", "--resume", "--output", out]
    stored = config.loads('[tasks]\nfamily = "sinusoid"\n')
    with pytest.raises(config.ConfigError) as err:
        experiment._check_same_run(stored.to_dict(), config.loads(
            '[tasks]\nfamily = "sinusoid"\nk_support = 7\n'), out)
    assert experiment.resume_command(out) in str(err.value)


def test_integer_ids_written_after_a_space_still_sort_numerically(tmp_path):
    """A file written "x, task, y" holds " 1", " 2", " 10": integers (pandas reads them as
    such), so tasks sort 1, 2, 10 as before values were kept unstripped; the names stay as
    written. " 1" beside "1" are two tasks (as "01" and "1"), so those ids are text."""
    path = tmp_path / "spaced.csv"
    path.write_text("x, task, y\n" + "".join(f"{i}, {t}, {i}\n" for i, t in
                                             enumerate([10, 2, 1, 10, 2, 1])))
    ts = from_csv(path, task="task", target="y")
    assert ts.names == (" 1", " 2", " 10")
    np.testing.assert_array_equal(ts[2][1], [0.0, 3.0])      # the rows of task 10, last
    path.write_text("x,task,y\n1,1,0\n2, 1,0\n3,1,0\n")
    assert from_csv(path, task="task", target="y").names == (" 1", "1")


@pytest.mark.parametrize("n", [2, np.int64(2), np.array(2)])
def test_a_support_count_beyond_a_task_names_it_however_the_count_is_given(n):
    """np.array(2) is a count as 2 is (one integer rule): its error names the task by its id,
    not by its index after sorting."""
    from metacore.data.tabular import from_dataframe
    d = {"t": ["a", "a", "a", "b"], "x": [1.0, 2, 3, 4], "y": [0.0, 1, 2, 3]}
    with pytest.raises(ValueError, match=r"^n_support: 2 support rows per task, but task 'b' "
                                         r"has only 1 row$"):
        from_dataframe(d, task="t", target="y", n_support=n)


# TOML's experiment on c.csv, a cross-entropy target "label"
CLASS_TOML = TOML.replace('path = "d.csv"', 'path = "c.csv"').replace(
    'target = "y"', 'target = "label"\nloss = "cross_entropy"')


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(present=st.sets(st.integers(0, 5), min_size=2, max_size=6),
       kind=st.sampled_from(["maml", "multitask", "protonet"]))
def test_class_codes_that_no_row_has_are_refused_naming_them(tmp_path, present, kind):
    """A cross-entropy net has max(label) + 1 outputs: labels 1..C (one-based), or codes with a
    gap, gave it classes no row has, which it then predicted with some probability (found by a
    new-user pass: labels 1, 2 trained a 3-way net). Refused under tasks.target naming the absent
    codes; every code present trains; the episodic learners (ProtoNet), whose classes are the
    support set's, take any codes."""
    present = sorted(present)
    lines = ["task,x,label"]
    for t in range(4):
        lines += [f"t{t},{r}.25,{present[r % len(present)]}" for r in range(2 * len(present))]
    (tmp_path / "c.csv").write_text("\n".join(lines) + "\n")
    cfg = config.loads(CLASS_TOML.format(kind=kind, episodes="false", test_fraction=0.2),
                       base_dir=tmp_path)
    absent = [c for c in range(present[-1] + 1) if c not in present]
    if not absent or kind == "protonet":
        experiment.build(cfg)
        return
    with pytest.raises(config.ConfigError) as err:
        experiment.build(cfg)
    msg = str(err.value)
    assert msg.startswith("tasks.target: column 'label' of ") and \
        f"0..{present[-1]}" in msg and ", ".join(map(str, absent[:5])) in msg, msg


@pytest.mark.parametrize("test_fraction, n_train", [(0.5, 3), (0.8, 1)])
def test_a_meta_batch_beyond_the_training_tasks_names_what_holding_out_left(tmp_path,
                                                                           test_fraction, n_train):
    """train.meta_batch counts training tasks, what tasks.test_fraction leaves of the file's:
    the error said only 'train.meta_batch must be <= the number of tasks (1)' (found by a
    new-user pass with tasks.test_fraction = 0.99), now also how many tasks the held-out
    fraction left and which two keys to lower."""
    _tasks_file(tmp_path / "d.csv", [4] * 6, [f"s{i}" for i in range(6)])
    cfg = config.loads(TOML.format(kind="maml", episodes="false", test_fraction=test_fraction)
                       .replace("meta_batch = 1", "meta_batch = 4"), base_dir=tmp_path)
    exp = experiment.build(cfg)
    assert exp.train_tasks.n_tasks == n_train
    with pytest.raises(config.ConfigError) as err:
        experiment.train(exp, progress=False)
    assert str(err.value) == (
        f"train.meta_batch must be <= the number of tasks ({n_train}), got 4 (the training "
        f"tasks: {n_train} left after holding out tasks.test_fraction = {test_fraction:g} of the "
        f"tasks; lower train.meta_batch or tasks.test_fraction)")


@SETTINGS
@given(names=st.lists(st.tuples(st.sampled_from(["a", "b", "sales"]),
                                st.sampled_from(["", " ", "  "]), st.sampled_from(["", " "])),
                      min_size=2, max_size=4))
def test_column_names_drop_the_spaces_around_them_and_a_clash_is_named_as_written(tmp_path,
                                                                                 names):
    """A header written 'x, task, y' names 'task' (the spaces around a name are dropped; values
    keep theirs). Names that clash only once stripped were refused as "'sales' more than once",
    which the file never says (found by a new-user pass): now named as written."""
    written = [pre + n + post for n, pre, post in names]
    stripped = [n for n, _, _ in names]
    path = tmp_path / "h.csv"
    path.write_text(",".join(written) + "\n" + ",".join(["1"] * len(written)) + "\n")
    if len(set(stripped)) == len(stripped):
        header, table = read_csv(path)
        assert header == stripped and all(table[n] == ["1"] for n in stripped)
        return
    with pytest.raises(ValueError) as err:
        read_csv(path)
    clash = [w for w, s in zip(written, stripped) if stripped.count(s) > 1]
    if clash != [s for s in stripped if stripped.count(s) > 1]:
        assert f"has the column names {', '.join(map(repr, clash))}, the same once the spaces " \
               f"around them are dropped" in str(err.value), err.value
    else:
        assert f"has the column name {clash[0]!r} more than once" in str(err.value), err.value
