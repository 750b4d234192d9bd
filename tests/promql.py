"""Just enough of PromQL to say which metrics and labels an expression names, for the checks of
the shipped alerting rules and dashboard (tests/unit/test_deploy_files.py) against what the
processes export. promtool parses the rules fully where it is installed
(tests/integration/test_monitoring.py); this reader needs nothing and runs in the quick tier.

It tokenizes, then walks the tokens: an identifier followed by ``(`` (or by ``by``/``without``)
is a function or an aggregation (it must be a known one), the list after ``by``/``without``/``on``/``ignoring``/
``group_left``/``group_right`` holds label names, ``{…}`` holds label matchers, and any other
identifier is a series name. Anything it does not recognise — an unknown character (a Grafana
variable outside a string), an unbalanced bracket, a matcher without a quoted value — is an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`)
  | (?P<range>\[[^\[\]]*\])
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+\b)
  | (?P<number>0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>==|!=|=~|!~|<=|>=|[-+*/%^<>=(){},])
    """,
    re.VERBOSE,
)

#: PromQL's aggregation operators and functions (prometheus.io, "Querying": operators, functions)
_FUNCTION_NAMES = """
    sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio
    abs absent absent_over_time ceil changes clamp clamp_max clamp_min day_of_month day_of_week
    day_of_year days_in_month delta deriv exp floor histogram_avg histogram_count histogram_fraction
    histogram_quantile histogram_stddev histogram_stdvar histogram_sum holt_winters
    double_exponential_smoothing hour idelta increase irate label_join label_replace ln log2 log10
    minute month predict_linear rate resets round scalar sgn sort sort_desc sort_by_label
    sort_by_label_desc sqrt time timestamp vector year avg_over_time min_over_time max_over_time
    sum_over_time count_over_time quantile_over_time stddev_over_time stdvar_over_time
    last_over_time present_over_time mad_over_time acos acosh asin asinh atan atanh cos cosh sin sinh
    tan tanh deg rad pi
    """
FUNCTIONS = frozenset(_FUNCTION_NAMES.split())
#: keywords followed by a list of label names in parentheses
LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
#: other keywords: set operators, bool, offset, atan2, and the number literals spelt as words
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})
MATCH_OPS = frozenset({"=", "!=", "=~", "!~"})


@dataclass
class References:
    """What one expression names."""

    metrics: set[str] = field(default_factory=set)
    labels: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)


def tokens(expr: str) -> list[tuple[str, str]]:
    """(kind, text) of each token, spaces and comments left out; ValueError on a character that
    starts no token."""
    found: list[tuple[str, str]] = []
    at = 0
    while at < len(expr):
        match = TOKEN.match(expr, at)
        if match is None:
            raise ValueError(f"not PromQL at {expr[at : at + 20]!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind not in ("space", "comment"):
            found.append((kind, match.group()))
        at = match.end()
    return found


def _label_list(toks: list[tuple[str, str]], at: int, refs: References) -> int:
    """``(a, b, …)`` from ``toks[at]`` (the ``(``): its names into ``refs``; the index after ``)``."""
    at += 1
    while toks[at] != ("op", ")"):
        kind, text = toks[at]
        if kind != "ident":
            raise ValueError(f"{text!r} in a label list")
        refs.labels.add(text)
        at += 1
        if toks[at] == ("op", ","):
            at += 1
    return at + 1


def _matchers(toks: list[tuple[str, str]], at: int, refs: References) -> int:
    """``{name op "value", …}`` from ``toks[at]`` (the ``{``); the index after ``}``."""
    at += 1
    while toks[at] != ("op", "}"):
        (name_kind, name), (_, op), (value_kind, value) = toks[at : at + 3]
        if name_kind != "ident" or op not in MATCH_OPS or value_kind != "string":
            raise ValueError(f"bad label matcher {name}{op}{value}")
        refs.labels.add(name)
        at += 3
        if toks[at] == ("op", ","):
            at += 1
    return at + 1


def _name(text: str, following: tuple[str, str], refs: References) -> None:
    """An identifier outside matchers and label lists: a keyword, a function or a series name."""
    if text.lower() in KEYWORDS or text in LABEL_LISTS:
        return
    if following == ("op", "(") or following in (("ident", "by"), ("ident", "without")):
        if text not in FUNCTIONS:
            raise ValueError(f"unknown function {text}()")
        refs.functions.add(text)
    else:
        refs.metrics.add(text)


def references(expr: str) -> References:
    """The series names, label names and functions ``expr`` uses; ValueError if it is not PromQL
    as far as this reader can tell."""
    toks = tokens(expr)
    toks.append(("end", ""))
    refs = References()
    depth = 0
    at = 0
    try:
        while toks[at][0] != "end":
            kind, text = toks[at]
            following = toks[at + 1]
            if kind == "ident" and text in LABEL_LISTS and following == ("op", "("):
                at = _label_list(toks, at + 1, refs)
                continue
            if text == "{":
                at = _matchers(toks, at, refs)
                continue
            if kind == "ident":
                _name(text, following, refs)
            if kind == "op" and text in "()}":
                depth += 1 if text == "(" else -1
                if depth < 0 or text == "}":
                    raise ValueError(f"unbalanced {text!r}")
            at += 1
    except (IndexError, ValueError) as exc:  # IndexError: a list or matcher ran past the end
        raise ValueError(f"{expr!r}: {exc or 'unterminated'}") from None
    if depth:
        raise ValueError(f"{expr!r}: unbalanced parentheses")
    return refs
