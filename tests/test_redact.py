"""Redaction (lockgate/redact.py): every kind of secret in the table is found in the forms it takes in prompts,
ordinary text is left alone, and no input makes a rule slow (a megabyte of adversarial text each)."""

from __future__ import annotations

import time

import pytest

from lockgate.redact import RULES, Redactor, luhn

KNOWN = ("sk-test-master-key-0123456789abcdef", "upstream-provider-key-XYZ123456")
REDACTOR = Redactor(KNOWN)

# (kind, text, the secret in it): the secret must go, and "[REDACTED:<kind>]" take its place.
FOUND: list[tuple[str, str, str]] = [
    ("known_secret", "the master key is sk-test-master-key-0123456789abcdef.", "sk-test-master-key-0123456789abcdef"),
    ("known_secret", "provider key upstream-provider-key-XYZ123456 leaked", "upstream-provider-key-XYZ123456"),
    ("openai_key", "OPENAI_API_KEY=sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z" * 2, "sk-proj-Ab3dEf6hIj9kLm2nOp5q"),
    ("openai_key", "key: sk-" + "a1B2c3D4e5F6g7H8i9J0" * 2 + " end", "sk-a1B2c3D4e5F6g7H8i9J0"),
    ("openai_key", '{"key":"sk-svcacct-' + "Z" * 40 + '"}', "sk-svcacct-ZZZZ"),
    ("anthropic_key", "ANTHROPIC_API_KEY=sk-ant-api03-" + "x_Y-z" * 19 + "AA", "sk-ant-api03-x_Y-z"),
    ("aws_access_key", "aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("aws_access_key", "temporary ASIAY34FZKBOKMUTVV7A here", "ASIAY34FZKBOKMUTVV7A"),
    ("aws_secret", 'aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"', "wJalrXUtnFEMI/K7MDENG"),
    ("aws_secret", "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n", "wJalrXUtnFEMI/K7MDENG"),
    ("google_api_key", "https://maps.googleapis.com/x?key=AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe", "AIzaSyDaGmWKa4"),
    ("github_token", "token ghp_" + "A1b2C3d4E5f6" * 3 + " ok", "ghp_A1b2C3d4E5f6"),
    ("github_token", "github_pat_11ABCDEFG0" + "a1B2c3_" * 10, "github_pat_11ABCDEFG0"),
    ("slack_token", "SLACK_BOT_TOKEN=xoxb-2048-4096-abcdefABCDEF123", "xoxb-2048-4096-abcdef"),
    ("bearer", "Authorization: Bearer 8f2b1c9d0e7a6f5b4c3d2e1f", "8f2b1c9d0e7a6f5b4c3d2e1f"),
    ("bearer", "curl -H 'authorization: bearer abc.def-123_456~xyz=='", "abc.def-123_456~xyz"),
    (
        "jwt",
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "eyJzdWIiOiIxMjM0NTY3ODkwIn0",
    ),
    (
        "private_key",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo\n"
        "4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u\n-----END RSA PRIVATE KEY-----",
        "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo",
    ),
    (
        "private_key",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
        "-----END OPENSSH PRIVATE KEY-----",
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ",
    ),
    (  # JSON-escaped newlines, and a key cut off before its END line
        "private_key",
        '{"pem": "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\nBKcwggSjAgEAAoIBAQC7',
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
    ),
    ("url_password", "DATABASE_URL=postgresql://app:Sup3rS3cret!@db.internal:5432/prod", "Sup3rS3cret!"),
    ("url_password", "redis://:p4ssw0rd-redis@cache:6379/0", "p4ssw0rd-redis"),
    ("credential", "DB_PASSWORD=hunter2hunter2", "hunter2hunter2"),
    ("credential", '{"api_key": "abcd1234efgh", "x": 1}', "abcd1234efgh"),
    ("credential", "client_secret: Xy9-zzTop-Qq", "Xy9-zzTop-Qq"),
    ("credential", "Password = 'correct-horse-battery'", "correct-horse-battery"),
    ("email", "write to alice@example.com today", "alice@example.com"),
    ("email", "cc: bob.smith+billing@mail.example.co.uk.", "bob.smith+billing@mail.example.co.uk"),
    ("email", "josé.garcía@ejemplo.es", "josé.garcía@ejemplo.es"),
    ("card_number", "card 4111 1111 1111 1111 exp 12/29", "4111 1111 1111 1111"),
    ("card_number", "card 4111-1111-1111-1111", "4111-1111-1111-1111"),
    ("card_number", "4111111111111111", "4111111111111111"),
    ("card_number", "mastercard 5555555555554444;", "5555555555554444"),
    ("card_number", "amex 3782 822463 10005", "3782 822463 10005"),
    ("card_number", "discover 6011111111111117", "6011111111111117"),
    ("card_number", "case29 4111111111111111", "4111111111111111"),  # after other digits
    ("card_number", "ref 2222 3333 4111 1111 1111 1111 exp", "4111 1111 1111 1111"),
    ("card_number", "4111 1111 1111 1111 2029", "4111 1111 1111 1111"),
    ("card_number", "diners 3056 930902 5904", "3056 930902 5904"),
]


@pytest.mark.parametrize(("kind", "text", "secret"), FOUND, ids=[f"{k}-{n}" for n, (k, _, _) in enumerate(FOUND)])
def test_each_kind_is_redacted(kind: str, text: str, secret: str) -> None:
    redacted = REDACTOR.redact(text)
    assert secret not in redacted, redacted
    assert f"[REDACTED:{kind}]" in redacted, redacted


# Ordinary text that looks a little like a secret: left as it is.
KEPT = [
    "The risk-assessment-framework-document-v2 is ready.",
    "pip install scikit-learn; task-management-system-overview",
    "a failed card 4111 1111 1111 1112 (not Luhn-valid) and an id 1234 5678 9012 3456",
    "a timestamp 1712345678901 and a phone +1 415 555 0100",
    "uuid 123e4567-e89b-12d3-a456-426614174000",
    "The bearer of this letter is trusted.",
    "Our password policy: at least 12 characters. The api key handling is in auth.py.",
    "user@localhost and @mentions and a@b",
    "AKIA alone, eyJ alone, sk- alone, xoxb- alone, ghp_ alone",
    "https://example.com/path?query=1 and http://host:8080/x",
    "def f(x):\n    return {'secret': None, 'token': x}",
]


@pytest.mark.parametrize("text", KEPT)
def test_ordinary_text_is_kept(text: str) -> None:
    assert REDACTOR.redact(text) == text


def test_values_are_walked_and_markers_are_stable() -> None:
    value = {"messages": [{"role": "user", "content": "mail alice@example.com"}], "alice@example.com": 1, "n": 2}
    assert REDACTOR.redact_value(value) == {
        "messages": [{"role": "user", "content": "mail [REDACTED:email]"}],
        "[REDACTED:email]": 1,
        "n": 2,
    }
    once = REDACTOR.redact("key sk-" + "q" * 30 + " and alice@example.com")
    assert REDACTOR.redact(once) == once  # redacting again changes nothing


def test_short_known_secrets_are_not_scrubbed_as_substrings() -> None:
    assert Redactor(["abc", "", "short12"]).redact("abc short12") == "abc short12"


def test_luhn() -> None:
    assert luhn("4111111111111111") and luhn("378282246310005") and not luhn("4111111111111112")


M = 1 << 20
ADVERSARIAL = {
    "letters": "a" * M,
    "spaces": " " * M,
    "sk": "sk-" * (M // 3),
    "sk-short": ("sk-" + "a" * 15 + " ") * (M // 19),
    "sk-ant": "sk-ant-" * (M // 7),
    "email-run": "a" * M + "@",
    "email-at": "a@" * (M // 2),
    "email-dots": "a@" + "b." * (M // 2),
    "digits": "4" * M,
    "digits-spaced": "4 " * (M // 2),
    "digits-dashed": "4-" * (M // 2),
    "digit-groups": "4444 " * (M // 5),
    "cards": "4111 1111 1111 1111 " * (M // 20),
    "jwt": "eyJ" * (M // 3),
    "jwt-parts": "eyJabcdefg.eyJ" + "a" * M,
    "pem": "-----BEGIN PRIVATE KEY-----" * (M // 27),
    "pem-dashes": "-----BEGIN PRIVATE KEY-----" + "-" * M,
    "url": "://" * (M // 3),
    "url-colons": "://" + "a:" * (M // 2),
    "bearer": "bearer " * (M // 7),
    "bearer-run": "Bearer " + "1" * M,
    "credential": "password=" * (M // 9),
    "credential-spaces": "password:" + " " * M,
    "aws": "aws_secret_access_key=" * (M // 22),
    "akia": "AKIA" * (M // 4),
    "slack": "xoxb-" * (M // 5),
    "github": "ghp_" * (M // 4),
    "mixed": "x sk-aaa a@b AKIA eyJ. bearer 1 :// password= 4111 " * (M // 50),
}


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_a_megabyte_of_adversarial_text_is_fast(name: str) -> None:
    text = ADVERSARIAL[name]
    start = time.perf_counter()
    REDACTOR.redact(text)
    elapsed = time.perf_counter() - start
    print(f"redact {name}: {len(text) / M:.2f} MB in {elapsed * 1000:.0f} ms")
    assert elapsed < 2.0  # linear: about 0.03-0.2 s; a quadratic rule would take minutes


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.kind)
def test_each_rule_alone_is_linear(rule: object) -> None:
    """Each pattern on its worst inputs of 256 KiB and 1 MiB: four times the text, not sixteen times the time."""
    pattern = rule.pattern  # type: ignore[attr-defined]

    def worst(size: int) -> float:
        times = []
        for text in ADVERSARIAL.values():
            sample = text[:size]
            start = time.perf_counter()
            pattern.sub("", sample)
            times.append(time.perf_counter() - start)
        return max(times)

    small, large = worst(M // 4), worst(M)
    assert large < 1.0 and large < 10 * small + 0.05, (small, large)


def test_speed_per_kilobyte_of_chat() -> None:
    chat = (
        "Here is my code: def f(x):\n    return x + 1  # TODO fix the api key handling and the token refresh\n"
        "Please review it; contact me at dev@example.com or call 555-0100. The password policy says 12 chars.\n"
    ) * 320
    start = time.perf_counter()
    for _ in range(10):
        REDACTOR.redact(chat)
    per_kb = (time.perf_counter() - start) / 10 / (len(chat) / 1024)
    print(f"redact: {per_kb * 1e6:.1f} us per KB of chat text")
    assert per_kb < 1e-3
