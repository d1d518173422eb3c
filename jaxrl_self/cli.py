"""`jaxrl-self train|eval|sample|convert` — parses arguments and calls library code.

Problems a person must fix (bad config, missing files, bad data) print one message and exit 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from jaxrl_self.config import ConfigError

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.py"


def _default_config_path() -> Path:
    local = Path("configs/default.py")
    return local if local.is_file() else DEFAULT_CONFIG


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxrl-self", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="run (or resume) a training job; extra --config.a.b=value flags override the config")
    train.add_argument("--config", type=Path, default=None, help="config file with get_config() (default: configs/default.py)")
    train.add_argument("--workdir", type=Path, default=None, help="run directory (default: runs/<config name>)")

    evaluate = sub.add_parser("eval", help="evaluate a run's latest checkpoint on its task's held-out split")
    evaluate.add_argument("--workdir", type=Path, required=True)
    evaluate.add_argument("--num-samples", type=int, default=1, help="samples per prompt (greedy when 1)")
    evaluate.add_argument("--k", type=int, nargs="*", default=[1], help="k values for pass@k / maj@k")
    evaluate.add_argument("--temperature", type=float, default=None)
    evaluate.add_argument("--output", type=Path, default=None, help="JSON file for the results (default: <workdir>/eval.json)")

    sample = sub.add_parser("sample", help="sample completions from a run's latest checkpoint")
    sample.add_argument("--workdir", type=Path, required=True)
    sample.add_argument("--prompt", action="append", required=True, help="a prompt (repeatable)")
    sample.add_argument("--num-samples", type=int, default=1)
    sample.add_argument("--temperature", type=float, default=0.0)
    sample.add_argument("--seed", type=int, default=0)
    return parser


def _train(args, overrides) -> int:
    from jaxrl_self.config import build_config
    from jaxrl_self.train.loop import train_and_evaluate

    config_path = args.config or _default_config_path()
    config = build_config(config_path, overrides)
    workdir = args.workdir or Path("runs") / config_path.stem
    summary = train_and_evaluate(config, workdir)
    print(json.dumps(summary, indent=2))
    print(f"run directory: {workdir}  (report: {workdir / 'report.md'})")
    return 0


def _eval(args) -> int:
    from jaxrl_self.eval.runs import evaluate_run
    from jaxrl_self.eval.passk import to_markdown

    results = evaluate_run(args.workdir, num_samples=args.num_samples, ks=args.k, temperature=args.temperature)
    output = args.output or args.workdir / "eval.json"
    output.write_text(json.dumps(results, indent=2))
    print(to_markdown(results["summary"]))
    print(f"accuracy {results['accuracy']:.4f}; results written to {output}")
    return 0


def _sample(args) -> int:
    from jaxrl_self.eval.runs import sample_run

    for prompt, completions in zip(args.prompt, sample_run(args.workdir, args.prompt, args.num_samples, args.temperature, args.seed)):
        for completion in completions:
            print(f"{prompt}\t{completion}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("absl", "orbax", "jax._src"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args, rest = _parser().parse_known_args(argv)
    try:
        if args.command == "train":
            return _train(args, rest)
        if rest:
            raise ConfigError(f"unrecognised arguments: {' '.join(rest)}")
        return {"eval": _eval, "sample": _sample}[args.command](args)
    except ConfigError as error:
        print(f"jaxrl-self: error: {error}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as error:
        if type(error).__name__ in ("DataError", "CheckpointError", "FileNotFoundError"):
            print(f"jaxrl-self: error: {error}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
