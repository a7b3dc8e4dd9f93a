"""The SSRF guard for API-given upstream URLs: every way of writing an internal address is refused."""

from __future__ import annotations

import asyncio

import pytest

from lockgate import urls
from lockgate.urls import Allowlist, UnsafeURL, check, check_syntax, is_internal, literal_address

NONE = Allowlist()


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/v1",
        "https://2130706433/v1",  # decimal
        "https://0x7f.1/v1",  # hex, short form
        "https://0x7f000001",
        "https://017700000001/v1",  # octal
        "https://0177.0.0.1",
        "https://127.1",
        "https://[::1]:8443",
        "https://[::ffff:127.0.0.1]/v1",  # IPv4-mapped IPv6
        "https://[::ffff:7f00:1]",
        "https://[2002:7f00:1::]",  # 6to4 around 127.0.0.1
        "https://[64:ff9b::a9fe:a9fe]",  # NAT64 around 169.254.169.254
        "https://0.0.0.0",
        "https://0",
        "https://169.254.169.254/latest/meta-data",  # the cloud metadata service
        "https://[fd00:ec2::254]",  # AWS's IPv6 metadata address
        "https://[fe80::1%25eth0]",
        "https://10.0.0.5",
        "https://172.16.0.1",
        "https://192.168.1.1",
        "https://100.64.0.1",  # shared address space (CGNAT; Alibaba's metadata is 100.100.100.200)
        "https://224.0.0.1",
        "https://255.255.255.255",
        "https://localhost:8000",
        "https://LocalHost./v1",
        "https://api.localhost",
    ],
)
def test_internal_addresses_are_refused_however_written(url: str) -> None:
    with pytest.raises(UnsafeURL, match=r"internal|localhost"):
        check_syntax(url, NONE)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://api.example.com/v1", "https"),
        ("ftp://api.example.com", "https"),
        ("file:///etc/passwd", "https"),
        ("https://user:pass@api.example.com", "user info"),
        ("https://api.example.com@169.254.169.254", "user info"),
        ("https://api.example.com/v1\r\nX-Injected: 1", "control"),
        ("https://api.example.com/v1\n", "control"),
        ("https://api.example.com/ v1", "spaces"),
        ("https://api.example.com\\@evil.example", "backslash"),
        ("https://api.example.com/#frag", "fragment"),
        ("https://", "no host"),
        ("https://[::1", "not a valid URL"),
        ("https://256.1.1.1", "not a valid address"),
        ("https://1.2.3.4.5", "not a valid address"),
        ("https://0x7g.1", "not a valid address"),
        ("https://api.example.com:99999", "port"),
        ("https://bücher.example", "punycode"),
        (12, "must be a URL"),
    ],
)
def test_malformed_urls_are_refused(url: object, why: str) -> None:
    with pytest.raises(UnsafeURL, match=why):
        check_syntax(url, NONE)


@pytest.mark.parametrize(
    "url", ["https://api.openai.com/v1", "https://8.8.8.8", "https://[2606:4700:4700::1111]:443/v1", "HTTPS://API.X.IO"]
)
def test_public_https_urls_pass(url: str) -> None:
    target = check_syntax(url, NONE)
    assert target.scheme == "https" and not target.trusted


def test_odd_encodings_read_as_the_resolver_reads_them() -> None:
    for text in ("2130706433", "0x7f.1", "017700000001", "127.1", "0x7f.0.0.1"):
        assert str(literal_address(text)) == "127.0.0.1"
    assert str(literal_address("::ffff:127.0.0.1")) == "::ffff:7f00:1"
    assert literal_address("api.example.com") is None
    assert is_internal(literal_address("::ffff:169.254.169.254"))  # type: ignore[arg-type]
    assert not is_internal(literal_address("2606:4700:4700::1111"))  # type: ignore[arg-type]


def test_an_allowed_origin_passes_whatever_it_is() -> None:
    allow = Allowlist.parse(["http://127.0.0.1:*", "https://10.0.0.5", "http://vllm.internal:8000"])
    assert check_syntax("http://127.0.0.1:4011/v1", allow).trusted
    assert check_syntax("http://2130706433:80", allow).trusted  # the same address, written otherwise
    assert check_syntax("https://10.0.0.5/v1", allow).trusted
    assert check_syntax("http://VLLM.internal:8000/v1", allow).trusted
    for url in ("http://127.0.0.2:4011", "https://10.0.0.5:8443", "http://10.0.0.5", "http://vllm.internal:8001"):
        with pytest.raises(UnsafeURL):
            check_syntax(url, allow)
    with pytest.raises(UnsafeURL, match="user info"):  # the allowlist never admits user info
        check_syntax("http://u:p@127.0.0.1:4011", allow)


def test_an_allowed_network_admits_https_only() -> None:
    allow = Allowlist.parse(["10.0.0.0/8", "fd00::/8"])
    assert not check_syntax("https://10.1.2.3/v1", allow).trusted
    assert check_syntax("https://[fd12::1]", allow)
    with pytest.raises(UnsafeURL, match="https"):
        check_syntax("http://10.1.2.3", allow)
    with pytest.raises(UnsafeURL, match="internal"):
        check_syntax("https://127.0.0.1", allow)


@pytest.mark.parametrize(
    "entry", ["ftp://x", "http://x/path", "http://x:port", "http://x:0", "nonsense", "http://u@x", "", "http://"]
)
def test_malformed_allowlist_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError):
        Allowlist.parse([entry])


def resolver(answers: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[str]:
        if host not in answers:
            raise OSError("no such host")
        return answers[host]

    return resolve


def test_names_are_resolved_and_every_address_checked() -> None:
    names = {
        "public.example": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
        "rebind.example": ["93.184.216.34", "127.0.0.1"],
        "metadata.example": ["169.254.169.254"],
        "mapped.example": ["::ffff:10.0.0.1"],
        "private.example": ["10.1.2.3"],
    }
    resolve = resolver(names)

    def run(url: str, allow: Allowlist = NONE) -> object:
        return asyncio.run(check(url, allow, resolve=resolve))

    assert run("https://public.example/v1")
    for host in ("rebind.example", "metadata.example", "mapped.example", "private.example"):
        with pytest.raises(UnsafeURL, match="resolves to an internal address"):
            run(f"https://{host}/v1")
    with pytest.raises(UnsafeURL, match="cannot be resolved"):
        run("https://missing.example")
    assert run("https://private.example", Allowlist.parse(["10.0.0.0/8"]))
    assert run("http://private.example:8000", Allowlist.parse(["http://private.example:8000"]))


def test_the_real_resolver_feeds_the_same_check() -> None:
    """What ``check`` resolves with is the system resolver the upstream client uses; localhost is internal."""
    found = asyncio.run(urls._getaddrinfo("localhost", 443))
    assert found and all(is_internal(literal_address(a)) for a in found)  # type: ignore[arg-type]
    with pytest.raises(UnsafeURL):
        asyncio.run(check("https://localhost./v1", NONE))
