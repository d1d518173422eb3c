"""`jaxrl-self train|eval|sample|convert|export` — parses arguments and calls library code.

Exit codes:
  0   done (`train`: the run finished; starting it again only re-evaluates)
  1   an unexpected error (a bug: the traceback is printed)
  2   a problem a person must fix — bad arguments or config, missing or malformed data files, a
      checkpoint that does not fit the config, an unwritable workdir — one line on stderr
      starting with "jaxrl-self: error:"
  3   `train` stopped: config.faults.max_consecutive_nonfinite steps in a row had a non-finite
      loss or gradient; a checkpoint of that step was saved
  75  `train` stopped on SIGTERM/SIGINT (preemption) after saving a checkpoint; the message gives
      the command that resumes the run (the same command again)
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import sys
from pathlib import Path

from jaxrl_self.config import DEFAULT_CONFIG_FILE, ConfigError
from jaxrl_self.errors import DropStorageErrorTracebacks, quiet_background_storage_errors, storage_error
from jaxrl_self.models.hf_config import CheckpointError as ModelFileError
from jaxrl_self.tasks.errors import DataError


def _default_config_path() -> Path:
    local = Path("configs/default.py")
    return local if local.is_file() else DEFAULT_CONFIG_FILE


EVAL_METRICS = """metrics (n = --num-samples completions per held-out problem, k from --k, k <= n):
  accuracy  the share of all n samples of all problems that are correct
  pass@k    the chance that at least one of k samples is correct (unbiased estimate from the
            n samples: 1 - C(n-c, k) / C(n, k) with c correct), averaged over problems
  mean@k    the share of correct answers among the first k samples, averaged over problems
            (what one sample gets right on average; mean@1 with n == 1 is greedy accuracy)
  maj@k     whether the most common answer among the first k samples is the correct one
"""


class _ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are ConfigErrors, so that they too print one line and exit 2."""

    def error(self, message):
        raise ConfigError(f"{message} (see: {self.prog} --help)")


def _parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="jaxrl-self", description=__doc__.splitlines()[0],
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="run (or resume) a training job; extra --config.a.b=value flags override the config")
    train.add_argument("--config", type=Path, default=None, help="config file with get_config() (default: configs/default.py)")
    train.add_argument("--workdir", type=Path, default=None, help="run directory (default: runs/<config name>)")

    checkpoint_help = "which checkpoint: the newest (latest) or the one with the best held-out accuracy (best)"
    length_help = "longest completion in tokens (default: the run's rl.max_new_tokens)"
    evaluate = sub.add_parser(
        "eval", help="evaluate a run's checkpoint on its task's held-out split", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate a run's checkpoint on its task's held-out split, with the prompts as training saw them\n"
                    "(task.template, then the model's chat template when task.chat_template applies it).",
        epilog=EVAL_METRICS)
    evaluate.add_argument("--workdir", type=Path, required=True)
    evaluate.add_argument("--num-samples", type=int, default=1, help="samples per prompt, n (greedy when 1)")
    evaluate.add_argument("--k", type=int, nargs="*", default=[1], help="k values for pass@k / maj@k / mean@k, each in [1, --num-samples]")
    evaluate.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: 0 when n == 1, else 1)")
    evaluate.add_argument("--max-new-tokens", type=int, default=None, help=length_help)
    evaluate.add_argument("--output", type=Path, default=None, help="JSON file for the results (default: <workdir>/eval.json)")
    evaluate.add_argument("--checkpoint", choices=("latest", "best"), default="latest", help=checkpoint_help)

    sample = sub.add_parser(
        "sample", help="sample completions from a run's checkpoint", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Sample completions of the given prompts from a run's checkpoint. Each prompt is rendered as training\n"
                    "rendered its task's questions (task.template, then the model's chat template when\n"
                    "task.chat_template applies it) unless --raw. Output: one line per completion, prompt<TAB>completion.")
    sample.add_argument("--workdir", type=Path, required=True)
    sample.add_argument("--prompt", action="append", required=True, help="a question, as in the task's data (repeatable)")
    sample.add_argument("--raw", action="store_true", help="send the prompts as given, without the task's template or chat template")
    sample.add_argument("--num-samples", type=int, default=1, help="completions per prompt")
    sample.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    sample.add_argument("--max-new-tokens", type=int, default=None, help=length_help)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--checkpoint", choices=("latest", "best"), default="latest", help=checkpoint_help)

    from jaxrl_self.models.convert import add_convert_arguments

    add_convert_arguments(sub.add_parser("convert", help="convert a model checkpoint between formats (GGUF, HF safetensors, orbax)"))
    export = sub.add_parser("export", help="write a run's checkpoint as a Hugging Face model directory (docs/runs.md)",
                            description="Write a run's checkpoint as a Hugging Face model directory: config.json, "
                                        "model.safetensors and the run's tokenizer, loadable with transformers' "
                                        "AutoModelForCausalLM / AutoTokenizer.from_pretrained(OUT_DIR).")
    export.add_argument("run_dir", type=Path, help="the run directory (its --workdir)")
    export.add_argument("out_dir", type=Path, help="output directory (must not exist or be empty)")
    export.add_argument("--checkpoint", choices=("latest", "best"), default="latest", help=checkpoint_help)
    export.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="dtype of the tensors written")
    export.add_argument("--peft", action="store_true",
                        help="a LoRA run (model.lora): write its adapters in the PEFT layout (adapter_config.json + "
                             "adapter_model.safetensors) instead of the merged model (docs/lora.md#export)")
    return parser


def _export(args) -> int:
    from jaxrl_self.recipes.export import export_run

    files = export_run(args.run_dir, args.out_dir, args.checkpoint, args.dtype, peft=args.peft)
    layout = "peft" if args.peft else "hf"
    print(f"exported the {args.checkpoint} checkpoint of {args.run_dir} -> {args.out_dir} ({layout}): {', '.join(files)}")
    return 0


def _train(args, overrides) -> int:
    from jaxrl_self.config import build_config
    from jaxrl_self.train.faults import EXIT_NONFINITE, EXIT_PREEMPTED, NonFiniteStop, Preempted
    from jaxrl_self.recipes import build_recipe
    from jaxrl_self.train.loop import train

    config_path = args.config or _default_config_path()
    config = build_config(config_path, overrides)
    workdir = args.workdir or Path("runs") / config_path.stem
    recipe = build_recipe(config)
    try:
        summary = train(config, workdir, recipe)
    except Preempted as stop:
        resume = shlex.join(["jaxrl-self", "train", "--config", str(config_path.resolve()), "--workdir", str(workdir.resolve()),
                             *overrides])
        print(f"jaxrl-self: {stop} in {workdir}; resume with: {resume}", file=sys.stderr)
        return EXIT_PREEMPTED
    except NonFiniteStop as stop:
        print(f"jaxrl-self: {stop}", file=sys.stderr)
        return EXIT_NONFINITE
    print(json.dumps(summary, indent=2))
    print(f"run directory: {workdir}  (report: {workdir / 'report.md'}; curves: tensorboard --logdir {workdir / 'tensorboard'})")
    return 0


def _check_sampling_args(args) -> None:
    """Usage errors of `eval` / `sample` (exit 2, one line) before any model is loaded."""
    if args.num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.temperature is not None and not (args.temperature >= 0 and math.isfinite(args.temperature)):
        raise ConfigError(f"--temperature must be finite and >= 0, got {args.temperature}")


def _eval(args) -> int:
    from jaxrl_self.recipes.runs import evaluate_run
    from jaxrl_self.eval.passk import to_markdown

    _check_sampling_args(args)
    if not args.k:
        raise ConfigError("--k needs at least one value")
    bad = [k for k in args.k if not 1 <= k <= args.num_samples]
    if bad:
        raise ConfigError(f"--k {' '.join(map(str, bad))}: each k must be in [1, --num-samples={args.num_samples}] "
                          "(pass@k needs at least k samples per problem)")
    output = args.output or args.workdir / "eval.json"
    if not (output.parent.is_dir() and os.access(output if output.exists() else output.parent, os.W_OK)):  # before the work
        raise ConfigError(f"cannot write the results to {output}: {'it' if output.exists() else 'its directory'} "
                          "is missing, read-only or not writable")
    results = evaluate_run(args.workdir, num_samples=args.num_samples, ks=args.k, temperature=args.temperature,
                           checkpoint=args.checkpoint, max_new_tokens=args.max_new_tokens)
    output.write_text(json.dumps(results, indent=2))
    print(to_markdown(results["summary"]))
    if "self_verify" in results:  # a LaSeR run (docs/algorithms.md#laser-last-token-self-reward)
        print("self-verification: " + ", ".join(f"{k} {v:.4f}" for k, v in results["self_verify"].items()))
    print(f"accuracy {results['accuracy']:.4f}; results written to {output}")
    return 0


def _sample(args) -> int:
    from jaxrl_self.recipes.runs import sample_run

    _check_sampling_args(args)
    empty = [number for number, prompt in enumerate(args.prompt, start=1) if not prompt.strip()]
    if empty:
        raise ConfigError(f"--prompt {empty[0]} is empty")
    completions = sample_run(args.workdir, args.prompt, args.num_samples, args.temperature, args.seed, args.checkpoint,
                             max_new_tokens=args.max_new_tokens, raw=args.raw)
    for prompt, outputs in zip(args.prompt, completions):
        for completion in outputs:
            print(f"{prompt}\t{completion}")
    return 0


def _convert(args) -> int:
    from jaxrl_self.models.convert import run_convert

    print(run_convert(args))
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("absl", "orbax", "jax._src"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:  # a full disk is reported below, once
        handler.addFilter(DropStorageErrorTracebacks())
    quiet_background_storage_errors()
    try:
        args, rest = _parser().parse_known_args(argv)
        if args.command == "train":
            return _train(args, rest)
        if rest:
            raise ConfigError(f"unrecognised arguments: {' '.join(rest)}")
        return {"eval": _eval, "sample": _sample, "convert": _convert, "export": _export}[args.command](args)
    except (ConfigError, DataError, ModelFileError) as error:  # ConfigError includes checkpoint.CheckpointError
        print(f"jaxrl-self: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # a missing file, a full disk or an unwritable output, however wrapped
        cause = storage_error(error)
        if cause is None:
            raise
        where = f": {cause.filename}" if cause.filename else ""
        print(f"jaxrl-self: error: {cause.strerror or cause}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
