"""Redaction: secrets and personal data replaced by ``[REDACTED:<kind>]`` in text the gateway keeps.

Applied to every prompt and response the spend ledger stores (:mod:`lockgate.prompts`). A :class:`Redactor`
runs, in order::

    known_secret     the gateway's own secrets, as exact substrings: the master key, the salt key, the
                     database and Redis URLs, every credential of the config's and the database's models
    RULES            a table of patterns, one kind each: provider keys (OpenAI, Anthropic, Google, GitHub,
                     Slack, AWS access key ids and secret keys), JWTs, bearer tokens, PEM private keys,
                     passwords in URLs, ``password=...``-style assignments, e-mail addresses, card numbers
                     (Luhn-checked)

Every pattern runs in time linear in the text, so no input can stall the event loop: no pattern has nested
or overlapping quantifiers; a token's pattern starts with its literal prefix (``sk-``, ``eyJ``, ``AKIA``...,
which the regex engine finds fast) followed by a fixed-width negative lookbehind, so that it is tried only where
a run of its characters begins, and it consumes that run possessively (it never backtracks into it). A rule
runs only when the text holds one of its hints (a plain substring test). Card numbers are looked for at the
start of every group of digits (a lookahead: a failed candidate consumes nothing), in the usual layouts, and
must pass the Luhn check. ``tests/test_redact.py`` times a megabyte of adversarial input against each rule.

Extra rules (a deployment's own ticket ids, say) are :class:`Rule` values passed to :class:`Redactor`; they
must keep to the same discipline.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["MIN_KNOWN_SECRET", "RULES", "Redactor", "Rule", "luhn"]

MIN_KNOWN_SECRET = 8  # shorter configured values are not scrubbed as substrings (they would hit ordinary words)
_SHORTEST = 6  # characters: no rule finds anything in shorter text (the shortest find: an e-mail, a@b.cd)


_DOUBLED = str.maketrans("0123456789", "0246813579")  # a digit doubled, its two digits added


def luhn(digits: str) -> bool:
    """Whether a string of ASCII digits passes the Luhn check (card numbers do)."""
    mixed = digits[-1::-2] + digits[-2::-2].translate(_DOUBLED)
    return (sum(mixed.encode()) - 48 * len(mixed)) % 10 == 0


def _card(candidate: str) -> bool:
    digits = candidate.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and luhn(digits)


@dataclass(frozen=True, slots=True)
class Rule:
    """One kind of secret: where ``pattern`` matches (and ``check``, if any, accepts the text), the text from
    the start of group ``start`` (``group`` when None) to the end of group ``group`` becomes
    ``[REDACTED:<kind>]`` (group 0: the whole match). ``hints``: substrings one of which the text must hold for
    the rule to run (of the lower-cased text when ``lower``); empty: always."""

    kind: str
    pattern: re.Pattern[str]
    hints: tuple[str, ...] = ()
    group: int = 0
    start: int | None = None
    check: Callable[[str], bool] | None = None
    lower: bool = False


_KEY = r"A-Za-z0-9_\-"  # the characters of URL-safe tokens

RULES: tuple[Rule, ...] = (
    Rule(
        "private_key",
        re.compile(
            r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY-----"
            r"(?:[A-Za-z0-9+/=\s:,.\\]|-(?!----END))*+"
            r"(?:-----END[A-Z0-9 ]{0,40}PRIVATE KEY-----)?"
        ),
        ("PRIVATE KEY",),
    ),
    Rule("jwt", re.compile(rf"eyJ(?<![{_KEY}]...)[{_KEY}]{{6,}}+\.eyJ[{_KEY}]{{6,}}+\.[{_KEY}]*+"), ("eyJ",)),
    Rule("anthropic_key", re.compile(rf"sk-ant-(?<![{_KEY}].{{7}})[{_KEY}]{{20,}}+"), ("sk-ant-",)),
    Rule("openai_key", re.compile(rf"sk-(?<![{_KEY}]...)[{_KEY}]{{20,}}+"), ("sk-",)),
    Rule(
        "aws_access_key",
        re.compile(r"A(?:KIA|SIA|BIA|CCA|GPA|IDA|ROA|NPA|NVA|IPA)(?<![A-Z0-9]....)[A-Z0-9]{16}(?![A-Z0-9])"),
        ("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA"),
    ),
    Rule(
        "aws_secret",
        re.compile(r"(?i)aws_?secret(?:_?access)?(?:_?key)?[\"'\s:=]{1,6}+([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"),
        ("aws",),
        group=1,
        lower=True,
    ),
    Rule("google_api_key", re.compile(rf"AIza(?<![{_KEY}]....)[{_KEY}]{{35}}(?![{_KEY}])"), ("AIza",)),
    Rule(
        "github_token",
        re.compile(
            r"g(?:h[pousr]_(?<![A-Za-z0-9_]....)[A-Za-z0-9]{36,}+|ithub_pat_(?<![A-Za-z0-9_].{11})[A-Za-z0-9_]{22,}+)"
        ),
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    Rule("slack_token", re.compile(r"xox[bpars]-(?<![A-Za-z0-9-].{5})[A-Za-z0-9-]{10,}+"), ("xox",)),
    Rule(
        "bearer",
        re.compile(r"[Bb](?<![A-Za-z0-9_].)(?i:earer)\s++((?=[A-Za-z0-9._~+/-]*\d)[A-Za-z0-9._~+/-]{8,}+=*+)"),
        ("bearer",),
        group=1,
        lower=True,
    ),
    Rule("url_password", re.compile(r"://[^\s/:@]*+:([^\s/@]++)@"), ("://",), group=1),
    Rule(
        "credential",
        re.compile(
            r"[PpSsAa](?<![A-Za-z].)(?i:assword|asswd|wd|ecret|pi_?key|ccess_?token|uth_?token)"
            r"[\"']?\s*+[:=]\s*+[\"']?(?!\[REDACTED)([^\s\"',;]{6,}+)"
        ),
        ("pass", "pwd", "secret", "key", "token"),
        group=1,
        lower=True,
    ),
    Rule("email", re.compile(r"(?<![\w.%+-])[\w.%+-]++@(?:[A-Za-z0-9-]++\.)+[A-Za-z]{2,}+"), ("@",)),
    Rule(  # 13-19 digits, or the usual groups (4-4-4-4[-1..3], 4-6-5, 4-6-4); tried at every group's start
        "card_number",
        re.compile(
            r"[2-6](?<![0-9].)(?=([0-9]{12,18}|[0-9]{3}(?:[ -][0-9]{4}){3}(?:[ -][0-9]{1,3})?"
            r"|[0-9]{3}[ -][0-9]{6}[ -][0-9]{4,5})(?![0-9]))"
        ),
        group=1,
        start=0,
        check=_card,
    ),
)
"""The built-in rules, in the order they run (the more specific first: an Anthropic key is not called an
OpenAI one, a JWT after ``Bearer`` is a JWT)."""


class Redactor:
    """Redacts text with :data:`RULES` (then ``extra``), after scrubbing ``known`` secrets as substrings."""

    __slots__ = ("_known", "_rules")

    def __init__(self, known: Iterable[str] = (), extra: Iterable[Rule] = ()) -> None:
        found = {value for value in known if isinstance(value, str) and len(value) >= MIN_KNOWN_SECRET}
        self._known = tuple(sorted(found, key=len, reverse=True))  # the longest first: one may contain another
        self._rules = (*RULES, *extra)

    def redact(self, text: str) -> str:
        """``text`` with every secret found replaced by ``[REDACTED:<kind>]``."""
        if len(text) < _SHORTEST:
            return text
        for secret in self._known:
            if secret in text:
                text = text.replace(secret, "[REDACTED:known_secret]")
        lowered: str | None = None
        for rule in self._rules:
            if rule.hints:
                if rule.lower:
                    lowered = text.lower() if lowered is None else lowered
                    haystack = lowered
                else:
                    haystack = text
                for hint in rule.hints:
                    if hint in haystack:
                        break
                else:
                    continue
            redacted = _apply(rule, text)
            if redacted is not text:
                text, lowered = redacted, None
        return text

    def redact_value(self, value: Any) -> Any:
        """A JSON value with every string in it (keys too) redacted; other values as they are."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, list):
            return [self.redact_value(item) for item in value]
        if isinstance(value, dict):
            return {self.redact(str(k)): self.redact_value(v) for k, v in value.items()}
        return value


def _apply(rule: Rule, text: str) -> str:
    """``text`` with each of the rule's finds replaced (a find that overlaps an earlier one is skipped);
    ``text`` itself when there is none."""
    marker, group, check = f"[REDACTED:{rule.kind}]", rule.group, rule.check
    first = group if rule.start is None else rule.start
    out: list[str] = []
    done = 0
    for match in rule.pattern.finditer(text):
        start, end = match.start(first), match.end(group)
        if start < done or (check is not None and not check(text[start:end])):
            continue
        out += (text[done:start], marker)
        done = end
    if not out:
        return text
    out.append(text[done:])
    return "".join(out)
