"""Check argument lists with the installed vLLM's own parser (no hand-kept list of flags)."""

from __future__ import annotations

import argparse


def vllm_serve_parser():
    """The parser `vllm serve` uses, from whichever module this vLLM version keeps it in."""
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    try:  # vLLM >= 0.30
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
    except ImportError:  # vLLM 0.2x
        from vllm.entrypoints.openai.cli_args import make_arg_parser
    return make_arg_parser(FlexibleArgumentParser())


def parse_serve_args(args: list[str]) -> argparse.Namespace:
    """Parse and validate like `vllm serve` does before loading anything; raises on a bad flag."""
    try:
        from vllm.entrypoints.launchers.cli_args import validate_parsed_serve_args
    except ImportError:
        from vllm.entrypoints.openai.cli_args import validate_parsed_serve_args
    from vllm.engine.arg_utils import AsyncEngineArgs

    ns = vllm_serve_parser().parse_args(args)
    validate_parsed_serve_args(ns)
    AsyncEngineArgs.from_cli_args(ns)  # types and names of every engine field
    return ns
