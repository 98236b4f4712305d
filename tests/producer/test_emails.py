"""The quick email check gives EmailStr's answers: the same normalized address, or the full check."""

from __future__ import annotations

from typing import Annotated

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, EmailStr, TypeAdapter, ValidationError

from producer.emails import EmailAddress, plain_email
from producer.schemas import MemberIn

STOCK = TypeAdapter(EmailStr)
OURS = TypeAdapter(Annotated[str, EmailAddress])

#: Pieces that reach every branch: role mailboxes, special-use and Punycode domains, numeric and
#: one-letter top-level domains, reserved "ab--" labels, long labels, case, and characters
#: just outside the plain alphabet.
LOCALS = [
    "a",
    "Kim.Lee",
    "x+tag",
    "postmaster",
    "Info",
    "a..b",
    ".a",
    "a.",
    "o'hara",
    "é",
    "a b",
    "x" * 65,
    "",
]
DOMAINS = [
    "example.com", "Example.COM", "mail.example.org", "localhost", "x.test", "y.local", "b",
    "xn--bcher-kva.ch", "ab--cd.com", "a-b.co", "-a.com", "a-.com", "1.2.3.4", "a.c0m", "a.c",
    "bücher.ch", "a_b.com", "[127.0.0.1]", "x" * 64 + ".com", "a." + "b" * 63, "",
]  # fmt: skip


def outcome(adapter: TypeAdapter[str], value: str) -> str:
    try:
        return "ok: " + adapter.validate_python(value)
    except ValidationError as exc:
        return "error: " + exc.errors()[0]["msg"]


@pytest.mark.parametrize("local", LOCALS)
@pytest.mark.parametrize("domain", DOMAINS)
def test_each_address_answers_as_emailstr(local: str, domain: str) -> None:
    value = f"{local}@{domain}"
    assert outcome(OURS, value) == outcome(STOCK, value)


LABEL = st.from_regex(r"[A-Za-z0-9-]{1,66}", fullmatch=True)


@settings(max_examples=1000, deadline=None)
@given(
    st.from_regex(r"[A-Za-z0-9.+_'-]{1,70}", fullmatch=True),
    st.lists(LABEL, min_size=1, max_size=5),
    st.from_regex(r"[A-Za-z0-9-]{1,5}", fullmatch=True) | st.sampled_from(["com", "test", "local", "COM"]),
)
def test_generated_addresses_answer_as_emailstr(local: str, labels: list[str], tld: str) -> None:
    value = f"{local}@{'.'.join([*labels, tld])}"
    assert outcome(OURS, value) == outcome(STOCK, value)


def test_plain_addresses_skip_the_full_check_and_others_do_not() -> None:
    assert plain_email("Kim.Lee+x@Mail.Example.COM") == "Kim.Lee+x@mail.example.com"
    for value in ("postmaster@example.com", "a@x.test", "a@xn--bcher-kva.ch", "a@b", "Kim <k@example.com>"):
        assert plain_email(value) is None


def test_the_member_schema_documents_the_email_as_emailstr_does() -> None:
    class Stock(BaseModel):
        email: EmailStr | None = None

    ours = MemberIn.model_json_schema()["properties"]["email"]
    assert ours == Stock.model_json_schema()["properties"]["email"]
