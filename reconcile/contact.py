"""Define a user's contact fields once, for the wire request, the plan and recorded state.

The names are the partner API's (``/contactInfo/updatecontactinfo``), which the manifest uses
too. The models here carry no configuration: each package's subclass adds its own (frozen or
not, extra fields forbidden), so they share the fields without sharing the rules.

Declared apart, each for a reason written beside it: the manifest's ``Contact`` (input
constraints and their messages), the API's ``ContactInfo`` answer and ``LiveContact`` (any field
may be missing or blank there) and the simulator's list (it plays the partner and must not
borrow the client's definitions).
"""

from __future__ import annotations

from pydantic import BaseModel


class ContactAddress(BaseModel):
    """The contact proper, as applied: the API requires these four and allows the others."""

    phone: str
    streetAddress1: str
    streetAddress2: str | None = None
    city: str
    state: str | None = None
    postCode: str | None = None
    country: str


class ContactNames(BaseModel):
    """The names the contact endpoint sets with the address (state records them with the user)."""

    firstName: str
    lastName: str


class ContactFields(ContactAddress, ContactNames):
    """Everything the contact endpoint sets besides the user id (names first, then address)."""


ADDRESS_FIELDS: tuple[str, ...] = tuple(ContactAddress.model_fields)
"""The contact proper: what the manifest's ``contact:`` holds and what state records."""

CONTACT_FIELDS: tuple[str, ...] = tuple(ContactFields.model_fields)
"""Names first, then the address: every field the contact endpoint sets."""
