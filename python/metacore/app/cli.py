"""The `metacore` command line (also `python -m metacore`).

    metacore demo                                   MAML and Meta-SGD on sinusoids, table + plot
    metacore demo omniglot --data PATH              ProtoNet and baselines, "Omniglot minimal"
    metacore train CONFIG.toml [--set KEY=VALUE]    any experiment described by a TOML file
    metacore train CONFIG.toml --resume             continue it from <output>/checkpoint.npz
    metacore evaluate [CONFIG.toml] --checkpoint PATH
                                                    evaluate a saved θ on the config's test tasks
                                                    (default: the config stored in the checkpoint)
    metacore predict CHECKPOINT --input new.csv [--support support.csv] --output pred.csv
                                                    predict new rows of your own data, after
                                                    adapting to a new task's labelled rows
    metacore bench                                  the core against the NumPy reference
    metacore --version

Exit codes: 0 done; 1 the run failed (e.g. training diverged); 2 bad command line, config or input
file; 3 an optional dependency is missing; 130 interrupted (train writes its checkpoint first:
continue with --resume).
"""

from __future__ import annotations

import argparse
import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_MISSING, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _config(args, stored=None):
    """The config of the command line: the file, else ``stored`` (a checkpoint's), with the
    --set overrides and the command-line options applied."""
    from . import config
    if args.config is not None:
        cfg = config.load(args.config, overrides=args.set or ())
    elif stored is not None:
        cfg = config.loads(config.from_dict(stored).to_toml(), overrides=args.set or ())
    else:
        raise config.ConfigError(f"--checkpoint {args.checkpoint} holds no config (it was not "
                                 f"written by metacore train): give the CONFIG.toml")
    if args.output is not None:
        cfg.output = args.output
    if args.threads is not None:
        cfg.threads = args.threads
    if getattr(args, "steps", None) is not None:
        cfg.train.steps = args.steps
    return cfg.validate()


def train(args) -> int:
    from .experiment import run_train
    run_train(_config(args), quiet=args.quiet, resume=args.resume)
    return EXIT_OK


def evaluate(args) -> int:
    from .experiment import run_evaluate
    stored = None
    if args.config is None:
        from ..train.checkpoint import load
        stored = load(args.checkpoint).info.get("config")
    run_evaluate(_config(args, stored), args.checkpoint, quiet=args.quiet)
    return EXIT_OK


def predict(args) -> int:
    from .experiment import run_predict
    run_predict(args.checkpoint, args.input, args.output, support_path=args.support,
                steps=args.steps, quiet=args.quiet)
    return EXIT_OK


SINUSOID_DEMO = {"steps": 70_000, "k_shot": 10, "meta_batch": 25, "test_tasks": 600, "seed": 0}


def demo(args) -> int:
    # Each demo takes the options that apply to it; one given to the other is refused, not ignored.
    if args.which == "omniglot":
        for name in ("k_shot", "meta_batch", "test_tasks"):
            if getattr(args, name) is not None:
                raise ValueError(f"--{name.replace('_', '-')} applies to the sinusoid demo only")
        from .demo import run_omniglot_demo
        run_omniglot_demo(args)
        return EXIT_OK
    if args.data is not None:
        raise ValueError("--data applies to `metacore demo omniglot` only")
    for name, default in SINUSOID_DEMO.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    from .demo import run_demo
    run_demo(args)
    return EXIT_OK


def bench(args) -> int:
    from .bench import run_bench
    run_bench(args)
    return EXIT_OK


def _path(text):
    """A path argument: '' is refused by argparse, naming the option (an empty --output was
    "[Errno 2] No such file or directory: ''" from train, after the run for predict)."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty: give a path")
    return text


def _common(p):
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--output", type=_path, default=None, help="output folder (default: the config's)")
    p.add_argument("--threads", type=int, default=None,
                   help="worker threads (-1: all cores; default: OpenMP's default)")


def _overrides(p):
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. --set tasks.k_support=5 (repeatable)")


def _version():
    from .. import __version__
    return __version__


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="metacore", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--version", action="version", version=f"metacore {_version()}")
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="meta-train MAML and Meta-SGD on sinusoids, evaluate on new "
                                    "tasks, print the table and save a plot; `demo omniglot "
                                    "--data PATH`: the Omniglot-minimal table")
    p.add_argument("which", nargs="?", default="sinusoid", choices=["sinusoid", "omniglot"],
                   help="the demo (default sinusoid)")
    p.add_argument("--data", default=None,
                   help="omniglot: the folder of images_background_small{1,2}.zip")
    _common(p)
    p.add_argument("--steps", type=int, default=None,
                   help="meta-steps (default: sinusoid 70000, omniglot its recipe's)")
    p.add_argument("--k-shot", type=int, default=None,
                   help="sinusoid: support points per task (default 10)")
    p.add_argument("--meta-batch", type=int, default=None, help="sinusoid (default 25)")
    p.add_argument("--test-tasks", type=int, default=None, help="sinusoid (default 600)")
    p.add_argument("--seed", type=int, default=None, help="default 0")
    p.set_defaults(run=demo, output_default="runs/demo")

    p = sub.add_parser("train", help="run the experiment a TOML file describes")
    p.add_argument("config", help="experiment file (see examples/)")
    p.add_argument("--steps", type=int, default=None, help="override train.steps")
    p.add_argument("--resume", action="store_true",
                   help="continue from <output>/checkpoint.npz up to train.steps steps in all")
    _common(p)
    _overrides(p)
    p.set_defaults(run=train)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint on the config's test tasks")
    p.add_argument("config", nargs="?", default=None,
                   help="experiment file (default: the config stored in the checkpoint)")
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint written by metacore train or metacore.save")
    _common(p)
    _overrides(p)
    p.set_defaults(run=evaluate)

    p = sub.add_parser("predict", help="predict the rows of a CSV file with a checkpoint "
                                       "trained on your own data (adapting to --support first)")
    p.add_argument("checkpoint", help="a checkpoint written by metacore train (tasks.family "
                                      "'csv')")
    p.add_argument("--input", required=True, help="CSV file of the rows to predict (the "
                                                  "training file's feature columns)")
    p.add_argument("--support", default=None,
                   help="CSV file of the new task's labelled rows (features and target): θ is "
                        "adapted to them first; with the task column in both files, per task")
    p.add_argument("--output", type=_path, required=True, help="CSV file to write: the input's columns "
                                                   "and prediction (written atomically)")
    p.add_argument("--steps", type=int, default=None,
                   help="adaptation steps on the --support rows (default: the learner's "
                        "inner_steps)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(run=predict)

    p = sub.add_parser("bench", help="speed of the core against the NumPy reference")
    p.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--output", type=_path, default=None, help="also write the table as JSON here")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(run=bench)
    return top


def _fail(what, exc, code) -> int:
    """One line on stderr (a multi-line message is joined), then the exit code."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    print(f"metacore: {what}: {text}", file=sys.stderr)
    return code


def main(argv=None) -> int:
    args = parser().parse_args(argv)   # exits with 2 on a bad command line
    if args.threads is not None and (args.threads == 0 or args.threads < -1):
        print(f"metacore: error: --threads must be -1 or >= 1, got {args.threads}",
              file=sys.stderr)
        return EXIT_USAGE
    if args.threads is not None and args.threads > 2**31 - 1:     # the core counts in an int
        print(f"metacore: error: --threads must be <= {2**31 - 1}, got {args.threads}",
              file=sys.stderr)
        return EXIT_USAGE
    if getattr(args, "steps", None) is not None and args.steps < 0:
        print(f"metacore: error: --steps must be >= 0, got {args.steps}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return args.run(args)
    except KeyboardInterrupt as exc:
        if not getattr(exc, "reported", False):    # train has said where to resume from
            print("metacore: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ImportError as exc:
        return _fail("error", exc, EXIT_MISSING)
    except FloatingPointError as exc:
        return _fail("predict failed" if args.run is predict else "training failed", exc,
                     EXIT_FAILED)
    # ConfigError is a ValueError; MemoryError: sizes asked for beyond this machine's memory;
    # Overflow/RecursionError: numbers or nesting in an input file beyond what can be read.
    except (ValueError, TypeError, OSError, MemoryError, OverflowError, RecursionError) as exc:
        return _fail("error", exc, EXIT_USAGE)
    except Exception as exc:  # noqa: BLE001 - anything else: the run failed, in one line
        return _fail(f"failed ({type(exc).__name__})", exc, EXIT_FAILED)


if __name__ == "__main__":
    raise SystemExit(main())
