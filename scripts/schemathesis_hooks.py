"""Loaded by scripts/schemathesis.sh through SCHEMATHESIS_HOOKS, before schemathesis runs.

CPython 3.11 (3.11.7 here and in CI) can raise a spurious
`SystemError: AST constructor recursion depth mismatch` from `ast.parse` (CPython
gh-106905). Hypothesis parses source code only to describe a lambda in a strategy's repr,
and schemathesis reports the error as a failed run although no request was ever sent. The
description is cosmetic, so an unreadable lambda is described generically; the checks on
the server's answers are untouched.
"""

from hypothesis.internal import lambda_sources

_describe = lambda_sources.lambda_description


def _describe_or_generic(f):
    try:
        return _describe(f)
    except SystemError:
        return "lambda: <source not shown>"


lambda_sources.lambda_description = _describe_or_generic
