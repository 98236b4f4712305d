"""Email addresses checked as pydantic's ``EmailStr`` checks them, with a quick path for plain ones.

``EmailStr`` runs ``email_validator`` on every address: about 20 us (a tenth of the producer's
CPU per ``POST /queue/members``), most of it Unicode checks of the domain, character by
character. Most addresses are plain ASCII (a dot-atom local part, letter-digit-hyphen labels,
a letters-only top-level domain): for those the check's outcome is known without it, and
:func:`plain_email` gives ``email_validator``'s normalized form (the domain lower-cased) in
about a microsecond. Anything else, and any plain address ``email_validator`` would refuse or
rewrite (a special-use domain, a role mailbox it lower-cases, a Punycode label), takes the full
check, so the answers and the error messages are ``EmailStr``'s.
``tests/producer/test_emails.py`` holds the two paths to the same answers.
"""

from __future__ import annotations

import re
from typing import Any

import email_validator
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES
from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic.networks import validate_email
from pydantic_core import core_schema

#: ``email_validator``'s limits: the whole address, its local part, its domain.
EMAIL_MAX_LENGTH = 254
LOCAL_PART_MAX_LENGTH = 64
DOMAIN_MAX_LENGTH = 253

_ATEXT = r"A-Za-z0-9_!#$%&'*+\-/=?^`{|}~"
_PLAIN = re.compile(
    rf"([{_ATEXT}]+(?:\.[{_ATEXT}]+)*)"
    r"@((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})"
)


def plain_email(value: str) -> str | None:
    """``value`` normalized as ``email_validator`` would, if it is a plain valid address; else ``None``."""
    if len(value) > EMAIL_MAX_LENGTH:
        return None
    match = _PLAIN.fullmatch(value)
    if match is None:
        return None
    local, domain = match.groups()
    # "--" covers Punycode labels ("xn--") and the other reserved ones ("ab--").
    if len(local) > LOCAL_PART_MAX_LENGTH or len(domain) > DOMAIN_MAX_LENGTH or "--" in domain:
        return None
    if local.lower() in CASE_INSENSITIVE_MAILBOX_NAMES:
        return None
    domain = domain.lower()
    # Read at each call: the list is email_validator's setting, which an application may change.
    for special in email_validator.SPECIAL_USE_DOMAIN_NAMES:
        if domain == special or domain.endswith("." + special):
            return None
    return f"{local}@{domain}"


def check_email(value: str) -> str:
    """``value`` as ``EmailStr`` validates it: normalized, or a ``value_error`` saying why not."""
    plain = plain_email(value)
    if plain is not None:
        return plain
    return validate_email(value)[1]


class EmailAddress:
    """Pydantic metadata: ``Annotated[str, EmailAddress]`` validates and documents as ``EmailStr`` does."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, _source: Any, _handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(check_email, core_schema.str_schema())

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        field_schema = handler(schema)
        field_schema.update(type="string", format="email")
        return field_schema
