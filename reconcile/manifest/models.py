"""Desired state: the manifest models (DESIGN §3).

The models are the single source of truth for what a manifest may say; ``reconcile schema``
exports them as JSON Schema. Loading YAML with file:line:column errors lives in
:mod:`reconcile.manifest.loader`, which also turns the rules' messages into located problems.
"""

from __future__ import annotations

import datetime
import functools
import itertools
import operator
import re
import unicodedata
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal

import pycountry
from email_validator import EmailNotValidError, validate_email
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    StringConstraints,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from reconcile.errors import did_you_mean

SIMPLUS = "simplus"
"""The reserved entitlement name of Sim+: granted only after the Market Data Agreement is signed."""

DEFAULT_AGREEMENT_ALERT_ID = {"live": 68, "demo": 68, "sim": 68, "staging": 70}

Environment = Literal["sim", "demo", "live", "staging"]

CROSS_CHECKS_BY_CALLER = "cross_checks_by_caller"
"""Validation context key: the caller (the loader) runs :func:`cross_reference_problems` itself."""

_PHONE = re.compile(r"^\+[0-9][0-9 ()./-]*[0-9]$")

# A strict subset of what email_validator accepts (plain ASCII dot-atom local part): for these the
# local part needs no further check and only the domain goes through the library, once per domain.
# Everything else goes through the library whole. 100k users x email_validator is ~10 s otherwise.
_SIMPLE_EMAIL = re.compile(r"^[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*@([A-Za-z0-9.-]+)$")

# Characters that disguise what a terminal or a review shows: C0/C1 controls (ANSI escapes),
# bidirectional overrides and isolates (U+202E turns "001redart" into "trader100"), invisible
# format characters and line separators. Names and other keys refuse all of them; free text
# (first and last names, addresses) keeps the joiners some scripts need (ZWJ/ZWNJ). Written as
# \x/\u escapes: pydantic (Rust regex), Python's re and JSON Schema validators all read them.
UNSAFE_IN_NAMES = (
    r"\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064"
    r"\u2066-\u206f\ufeff\ufff9-\ufffb"
)
UNSAFE_IN_TEXT = r"\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
NAME_PATTERN = f"^[^{UNSAFE_IN_NAMES}]*$"
TEXT_PATTERN = f"^[^{UNSAFE_IN_TEXT}]*$"
NameText = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
"""An identity or key (user name, email, entitlement name, variable, path): nothing invisible."""

MAX_ITEMS = 1_000
"""Most items in any list or mapping but ``users`` (the loader also checks it before parsing)."""

StrictInt = Annotated[int, Strict()]
StrictBool = Annotated[bool, Strict()]
PositiveId = Annotated[int, Field(gt=0, strict=True)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class PasswordFromEnv(_Model):
    """Read the password from an environment variable at apply time."""

    env: Annotated[str, StringConstraints(min_length=1, pattern=NAME_PATTERN)]


class PasswordFromFile(_Model):
    """Read the password from a file (first line) at apply time."""

    file: Annotated[str, StringConstraints(min_length=1, pattern=NAME_PATTERN)]


class PasswordGenerate(_Model):
    """Generate a strong password at apply time; shown or written once, never stored."""

    generate: Literal[True]


LiteralPassword = Annotated[str, StringConstraints(min_length=8, max_length=64)]

PASSWORD_EXPECTED = (
    "expected a string of 8-64 characters or one of {env: VAR}, {file: PATH}, {generate: true}"
)


_PASSWORD_KIND_BY_KEY = {"env": "from-env", "file": "from-file", "generate": "generate"}


def _password_kind(value: Any) -> str | None:
    # Pick the one union member the input is meant to be, so a mistake yields that member's
    # error instead of pydantic's four-way union noise. Runs once per user: the input kinds
    # (a mapping, a string) come first, the models (when serializing) after.
    if isinstance(value, dict):
        return _PASSWORD_KIND_BY_KEY.get(next(iter(value))) if len(value) == 1 else None
    if isinstance(value, str):
        return "literal"
    if isinstance(value, PasswordFromEnv):
        return "from-env"
    if isinstance(value, PasswordFromFile):
        return "from-file"
    if isinstance(value, PasswordGenerate):
        return "generate"
    return None


PasswordSource = Annotated[
    Annotated[PasswordFromEnv, Tag("from-env")]
    | Annotated[PasswordFromFile, Tag("from-file")]
    | Annotated[PasswordGenerate, Tag("generate")]
    | Annotated[LiteralPassword, Tag("literal")],
    Discriminator(
        _password_kind,
        custom_error_type="password_source",
        custom_error_message=PASSWORD_EXPECTED,
    ),
]


# The fields of reconcile.contact.ContactAddress, declared again for the input limits and messages
# each one carries (the plan and state trust what this model let through).
class Contact(_Model):
    """Contact details, reconciled with /contactInfo/updatecontactinfo."""

    phone: Annotated[str, StringConstraints(min_length=10, max_length=21)]
    streetAddress1: Annotated[str, StringConstraints(min_length=3, max_length=61, pattern=TEXT_PATTERN)]
    streetAddress2: Annotated[str, StringConstraints(max_length=61, pattern=TEXT_PATTERN)] | None = None
    city: Annotated[str, StringConstraints(min_length=2, max_length=35, pattern=TEXT_PATTERN)]
    state: Annotated[str, StringConstraints(min_length=1, max_length=35, pattern=TEXT_PATTERN)] | None = None
    postCode: Annotated[str, StringConstraints(min_length=4, max_length=11, pattern=TEXT_PATTERN)] | None = (
        None
    )
    country: Annotated[str, StringConstraints(min_length=2, max_length=2)]

    @field_validator("phone")
    @classmethod
    def _phone_international(cls, v: str) -> str:
        if not _PHONE.match(v):
            raise ValueError(
                f"expected a phone number in international form such as +12125550100 "
                f"(a leading + and digits; spaces, dots, dashes and parentheses allowed), got {v!r}"
            )
        return v

    @field_validator("country")
    @classmethod
    def _iso_country(cls, v: str) -> str:
        if not _is_country_code(v):
            raise ValueError(f"expected a 2-letter ISO 3166 country code such as US or GB, got {v!r}")
        return v

    @model_validator(mode="after")
    def _state_for_us(self) -> Contact:
        if self.country == "US" and not self.state:
            raise ValueError("state is required when country is US (e.g. state: NY)")
        return self


@functools.lru_cache(maxsize=512)
def _is_country_code(code: str) -> bool:
    return code.isascii() and code.isupper() and pycountry.countries.get(alpha_2=code) is not None


@functools.lru_cache(maxsize=4096)
def _domain_problem(domain: str) -> str | None:
    try:
        validate_email(f"x@{domain}", check_deliverability=False)
    except EmailNotValidError as exc:
        return str(exc)
    return None


def email_problem(address: str) -> str | None:
    """Say why ``address`` is not a valid email address, or None when it is."""
    simple = _SIMPLE_EMAIL.match(address)
    if simple:
        return _domain_problem(simple.group(1))
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        return str(exc)
    return None


_ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def _written_date(value: Any) -> Any:
    # pydantic alone would take a number as seconds since 1970: a date must be written as one.
    if isinstance(value, date) or (isinstance(value, str) and _ISO_DATE.match(value)):
        return value
    raise ValueError(f"expected a date written YYYY-MM-DD, such as 2026-12-31, got {value!r}")


WrittenDate = Annotated[date, BeforeValidator(_written_date)]


# Strict: "2500" (a string) or true (a boolean) is a mistake, not a number; 2500 (a whole number) is fine.
Amount = Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)]
Percentage = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False, strict=True)]


class RiskSettings(_Model):
    """Auto-liquidation settings (the contract's ``postTradeRisk`` / ``UserAccountAutoLiq`` fields).

    Every field is optional: a template sets some, an account overrides them field by field, and
    only the fields set are ever sent or compared.
    """

    marginPercentageAlert: Percentage | None = None
    dailyLossPercentageAlert: Percentage | None = None
    dailyLossAlert: Amount | None = None
    marginPercentageLiqOnly: Percentage | None = None
    dailyLossPercentageLiqOnly: Percentage | None = None
    dailyLossLiqOnly: Amount | None = None
    marginPercentageAutoLiq: Percentage | None = None
    dailyLossPercentageAutoLiq: Percentage | None = None
    dailyLossAutoLiq: Amount | None = None
    weeklyLossAutoLiq: Amount | None = None
    flattenTimestamp: (
        Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=TEXT_PATTERN)] | None
    ) = None
    trailingMaxDrawdown: Amount | None = None
    trailingMaxDrawdownLimit: Amount | None = None
    trailingMaxDrawdownMode: Literal["EOD", "RealTime"] | None = None
    dailyProfitAutoLiq: Amount | None = None
    weeklyProfitAutoLiq: Amount | None = None
    doNotUnlock: StrictBool | None = None
    changesLocked: StrictBool | None = None

    def fields_set(self) -> dict[str, Any]:
        """The fields this manifest entry sets (None fields are not settings)."""
        return self.model_dump(exclude_none=True)


class AccountTemplate(_Model):
    """One of the organization's template accounts, as the manifest names it."""

    templateAccountId: PositiveId
    initialBalance: Annotated[float, Field(gt=0, allow_inf_nan=False, strict=True)]
    risk: RiskSettings = RiskSettings()


ACCOUNT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
TradingState = Literal["active", "locked", "revoked"]
_ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_DATE_EXPECTED = "expected a date such as 2026-11-20 (YYYY-MM-DD)"


def _trade_date(value: Any) -> Any:
    """Accept a date (YAML's unquoted or quoted ``2026-11-20``), never a time or a number."""
    if isinstance(value, datetime.datetime):
        raise ValueError(f"{_DATE_EXPECTED}, got a date and time: write the date alone")
    if isinstance(value, datetime.date):
        return value
    if not isinstance(value, str):
        # pydantic would read a number as seconds since 1970: never what a manifest means.
        what = (
            "true or false"
            if isinstance(value, bool)
            else "a number"
            if isinstance(value, int | float)
            else "a value of another kind"
        )
        raise ValueError(f"{_DATE_EXPECTED}, got {what}")
    if not _ISO_DATE.match(value):
        timed = _ISO_DATE.match(value[:10]) and value[10:11] in ("T", "t", " ")
        detail = "a date and time: write the date alone" if timed else f"{value[:40]!r}"
        raise ValueError(f"{_DATE_EXPECTED}, got {detail}")
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a real date (no such day in the calendar)") from None


TradeDate = Annotated[datetime.date, BeforeValidator(_trade_date)]


class Account(_Model):
    """One evaluation account of a user. ``name`` is the identity key (organization-wide, any case)."""

    name: Annotated[str, StringConstraints(min_length=3, max_length=64, pattern=ACCOUNT_NAME_PATTERN)]
    template: NameText
    risk: RiskSettings | None = None
    """Overrides of the template's risk, field by field."""
    riskCategory: NameText | None = None
    trading: TradingState = "active"
    resetTo: TradeDate | None = None
    """Each new value resets the account once, to the start of that trade date."""


class User(_Model):
    """One evaluation trader. ``name`` is the identity key."""

    name: Annotated[str, StringConstraints(min_length=3, max_length=64, pattern=NAME_PATTERN)]
    status: Literal["active", "cancelled"] = "active"
    email: Annotated[str, StringConstraints(max_length=64, pattern=NAME_PATTERN)] | None = None
    password: PasswordSource | None = None
    firstName: Annotated[str, StringConstraints(min_length=1, pattern=TEXT_PATTERN)] | None = None
    lastName: Annotated[str, StringConstraints(min_length=1, pattern=TEXT_PATTERN)] | None = None
    tradovateSubscriptionPlanId: PositiveId | None = None
    entitlements: Annotated[tuple[NameText, ...], Field(max_length=MAX_ITEMS)] = ()
    contact: Contact | None = None
    expiresOn: WrittenDate | None = None
    """From this date (UTC) on, the evaluation is over: the plan cancels everything of the user."""
    accounts: Annotated[tuple[Account, ...], Field(max_length=MAX_ITEMS)] = ()

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        if v is not None and (problem := email_problem(v)) is not None:
            raise ValueError(f"expected a valid email address such as trader001@example.com: {problem}")
        return v

    @model_validator(mode="after")
    def _active_needs_identity(self) -> User:
        # Runs once per user (100k on a big desk): the common, valid case takes the fewest steps.
        first, last = self.firstName, self.lastName
        if self.status == "active" and (
            self.email is None or self.password is None or first is None or last is None
        ):
            missing = [f for f in ("email", "password", "firstName", "lastName") if getattr(self, f) is None]
            raise ValueError(
                f"an active user needs {', '.join(missing)} (or set status: cancelled to cancel this user)"
            )
        if first and last and len(first) + len(last) > 60:
            raise ValueError(
                f"firstName and lastName may have at most 60 characters together "
                f"(have {len(first) + len(last)})"
            )
        entitlements = self.entitlements
        if len(entitlements) > 1 and len(set(entitlements)) != len(entitlements):
            raise ValueError("entitlements lists a name twice")
        return self

    @property
    def has_literal_password(self) -> bool:
        """True when the manifest holds the password itself (acceptable in sim only)."""
        return isinstance(self.password, str)


class Partner(_Model):
    """The partner organization's fixed ids."""

    dataAccountId: PositiveId
    entitlements: dict[NameText, PositiveId] = Field(default_factory=dict, max_length=MAX_ITEMS)
    agreementAlertId: PositiveId | None = None
    accountTemplates: dict[NameText, AccountTemplate] = Field(default_factory=dict, max_length=MAX_ITEMS)
    """Names used by ``users[].accounts[].template`` → the organization's template accounts."""
    riskCategories: dict[NameText, PositiveId] = Field(default_factory=dict, max_length=MAX_ITEMS)
    """Names used by ``users[].accounts[].riskCategory`` → ``riskCategoryId``."""

    @model_validator(mode="after")
    def _simplus_has_one_name(self) -> Partner:
        # Sim+ must never reach entitlementIds at creation; another name for its id would smuggle
        # it there, past the agreement-gated grant.
        simplus = self.entitlements.get(SIMPLUS)
        aliases = sorted(n for n, i in self.entitlements.items() if n != SIMPLUS and i == simplus)
        if simplus is not None and aliases:
            raise ValueError(
                f"entitlements: {', '.join(aliases)} has the Sim+ id {simplus}; Sim+ may only be "
                f"named {SIMPLUS!r} (it is granted after the Market Data Agreement, never at creation)"
            )
        return self


class CancelFlags(_Model):
    """The four flags of /user/canceleverything; all on unless turned off here."""

    tradovateSubscriptions: StrictBool = True
    tradingPermissions: StrictBool = True
    userPlugins: StrictBool = True
    marketDataSubscriptions: StrictBool = True


class Defaults(_Model):
    """Values applied to every user unless the user says otherwise."""

    tradovateSubscriptionPlanId: PositiveId | None = None
    cancel: CancelFlags = CancelFlags()


class Policy(_Model):
    """Safety rails: cancellation budgets (DESIGN §8.4)."""

    maxCancellations: Annotated[int, Field(ge=0, strict=True)] = 25
    maxCancellationPercent: Annotated[float, Field(ge=0, le=100, strict=True)] = 10.0


class PostgresBackend(_Model):
    """Where the PostgreSQL DSN comes from: the name of an environment variable, never the DSN."""

    dsnEnv: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class Backend(_Model):
    """Where recorded state lives when it is not a local file."""

    postgres: PostgresBackend


@dataclass(frozen=True)
class CrossProblem:
    """A rule that spans users: ``path`` is where it is wrong, ``other`` the place it clashes with."""

    path: tuple[str | int, ...]
    message: str
    other: tuple[str | int, ...] | None = None


@dataclass(frozen=True)
class AccountKeys:
    """What the cross-user rules look at in one account entry."""

    name: str | None
    template: str | None
    riskCategory: str | None = None
    resetTo: datetime.date | None = None


@dataclass(frozen=True)
class UserKeys:
    """What the cross-user rules look at in one user entry (read before or after validation)."""

    name: str | None
    email: str | None
    entitlements: tuple[str, ...]
    accounts: tuple[AccountKeys, ...] = ()
    cancelled: bool = False

    @classmethod
    def of(cls, user: User) -> UserKeys:
        """The keys of a validated user."""
        accounts = tuple(AccountKeys(a.name, a.template, a.riskCategory, a.resetTo) for a in user.accounts)
        return cls(user.name, user.email, user.entitlements, accounts, user.status == "cancelled")


@dataclass(frozen=True)
class KnownNames:
    """The names ``partner`` defines; None skips the rule on them (that section is itself broken)."""

    entitlements: Collection[str] | None
    templates: Collection[str] | None = ()
    categories: Collection[str] | None = ()

    @classmethod
    def of(cls, partner: Partner) -> KnownNames:
        return cls(partner.entitlements, partner.accountTemplates, partner.riskCategories)


def cross_reference_problems(
    users: Sequence[UserKeys], known: KnownNames, *, today: datetime.date | None = None
) -> Iterator[CrossProblem]:
    """Yield every broken rule that spans users: unique names and emails, defined names, accounts.

    ``today`` (the caller's clock, UTC) enables the rule that ``resetTo`` is not in the future.
    """
    yield from _user_problems(users, known.entitlements)
    yield from _account_problems(users, known, today)


def cross_problems_possible(
    users: Sequence[User], known: KnownNames, *, today: datetime.date | None = None
) -> bool:
    """Whether :func:`cross_reference_problems` finds anything in validated ``users``, quickly."""
    check = CrossCheck()
    check.add(users)
    return check.possible(known, today=today)


class CrossCheck:
    """Tell quickly whether validated users break a rule across users, gathering them batch by batch.

    Column by column, without a :class:`UserKeys` per user: a valid 100k-user desk is checked in a
    fraction of the time, and each batch is read while its models are fresh in the CPU's cache.
    Only when :meth:`possible` says True are the problems worth listing.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self.emails: list[str] = []
        self.entitlements: set[str] = set()
        self.with_accounts: list[User] = []

    def add(self, users: Sequence[User]) -> None:
        """Gather the next batch of users (map() with attrgetter: half a comprehension's time)."""
        self.names.extend(map(_NAME, users))
        self.emails.extend(email for email in map(_EMAIL, users) if email is not None)
        self.entitlements.update(itertools.chain.from_iterable(map(_ENTITLEMENTS, users)))
        self.with_accounts.extend(itertools.compress(users, map(_ACCOUNTS, users)))

    def possible(self, known: KnownNames, *, today: datetime.date | None = None) -> bool:
        """False when no rule across the gathered users is broken; True when one is."""
        if len(set(_folded(self.names, skeleton=True))) != len(self.names):
            return True
        if len(set(_folded(self.emails, skeleton=False))) != len(self.emails):
            return True
        defined = known.entitlements
        if defined is not None and not all(name in defined for name in self.entitlements):
            return True
        # The account rules look only at users with accounts (a cancelled user with some included).
        keys = [UserKeys.of(user) for user in self.with_accounts]
        return next(_account_problems(keys, known, today), None) is not None


_NAME, _EMAIL, _ENTITLEMENTS, _ACCOUNTS = map(
    operator.attrgetter, ("name", "email", "entitlements", "accounts")
)


def _folded(texts: list[str], *, skeleton: bool) -> list[str]:
    """Each name's :func:`name_skeleton`, or each text case-folded, in one call over all of them."""
    joined = "\n".join(texts)
    # Names and emails cannot hold a newline (NAME_PATTERN); casefold maps character by character.
    if not texts or joined.count("\n") != len(texts) - 1 or (skeleton and not joined.isascii()):
        return [name_skeleton(text) if skeleton else text.casefold() for text in texts]
    folded = joined.casefold()
    return (folded.translate(_ASCII_LOOK_ALIKES) if skeleton else folded).split("\n")


def _user_problems(
    users: Sequence[UserKeys], known_entitlements: Collection[str] | None
) -> Iterator[CrossProblem]:
    defined = ", ".join(sorted(known_entitlements or ())) or "none"
    names: dict[str, int] = {}
    skeletons: dict[str, int] = {}
    emails: dict[str, int] = {}
    for index, user in enumerate(users):
        if user.name is not None:
            first = names.setdefault(user.name, index)
            if first != index:
                yield CrossProblem(
                    ("users", index, "name"), f"user {user.name!r} is defined twice", ("users", first)
                )
            else:
                first = skeletons.setdefault(name_skeleton(user.name), index)
                if first != index:
                    other = users[first].name
                    yield CrossProblem(
                        ("users", index, "name"),
                        f"user {user.name!a} looks like user {other!a}: the names differ only in "
                        "case or look-alike characters (0/O, 1/l/I, Cyrillic, Greek, full-width…); "
                        "rename one",
                        ("users", first),
                    )
        if user.email is not None:
            first = emails.setdefault(user.email.casefold(), index)
            if first != index:
                yield CrossProblem(
                    ("users", index, "email"),
                    f"email {user.email!r} is already used by user {users[first].name!r} "
                    "(emails are unique, ignoring case)",
                    ("users", first),
                )
        if known_entitlements is None:
            continue
        for position, name in enumerate(user.entitlements):
            if name not in known_entitlements:
                yield CrossProblem(
                    ("users", index, "entitlements", position),
                    f"{name!r} is not defined under partner.entitlements (defined: {defined})"
                    + did_you_mean(name, sorted(known_entitlements)),
                )


def _account_problems(
    users: Sequence[UserKeys], known: KnownNames, today: datetime.date | None
) -> Iterator[CrossProblem]:
    """Account names unique in the organization (any case), templates and categories defined."""
    seen: dict[str, tuple[int, int]] = {}
    for index, user in enumerate(users):
        if user.cancelled and user.accounts:
            yield CrossProblem(
                ("users", index, "accounts"),
                "a cancelled user has no accounts to manage: remove accounts (cancel-everything "
                "revokes their trading permissions unless defaults.cancel.tradingPermissions is false)",
            )
        for position, account in enumerate(user.accounts):
            path = ("users", index, "accounts", position)
            if account.name is not None:
                first = seen.setdefault(account.name.casefold(), (index, position))
                if first != (index, position):
                    owner = users[first[0]].name
                    yield CrossProblem(
                        (*path, "name"),
                        f"account {account.name!r} is already an account of user {owner!r} "
                        "(account names are unique in the organization, ignoring case)",
                        ("users", first[0], "accounts", first[1], "name"),
                    )
            yield from _undefined(path, "template", account.template, "accountTemplates", known.templates)
            yield from _undefined(
                path, "riskCategory", account.riskCategory, "riskCategories", known.categories
            )
            if today is not None and account.resetTo is not None and account.resetTo > today:
                yield CrossProblem(
                    (*path, "resetTo"),
                    f"resetTo {account.resetTo.isoformat()} is in the future (today is "
                    f"{today.isoformat()}, UTC): an account is reset to a trade date that has begun",
                )


def _undefined(
    path: tuple[str | int, ...], key: str, name: str | None, section: str, defined: Collection[str] | None
) -> Iterator[CrossProblem]:
    if name is None or defined is None or name in defined:
        return
    listed = ", ".join(sorted(defined)) or "none"
    yield CrossProblem(
        (*path, key),
        f"{name!r} is not defined under partner.{section} (defined: {listed})"
        + did_you_mean(name, sorted(defined)),
    )


# Letters of other scripts drawn like Latin ones (a subset of Unicode's confusables.txt, TR39):
# enough to catch "tr\u0430der001" (a Cyrillic a) beside "trader001" without a 6,000-entry
# dependency. Both cases are listed, as the look-alike differs (Greek capital nu is N, small v).
_LOOK_ALIKES = str.maketrans(
    "АВЕКМНОРСТУХЅІЈӀҮҺԚԜаеорсухѕіјӏүһԛԝԁвкмнтɑıΑΒΕΖΗΙΚΜΝΟΡΤΥΧαοριτυχνεγω",
    "ABEKMHOPCTYXSIJlYHQWaeopcyxsijlyhqwdbkmhtaiABEZHIKMNOPTYXaopituxveyw",
)


# ASCII characters drawn alike (confusables.txt: 0 → O, 1 → l, I → l, | → l), applied after case
# folding: names are case-insensitive, so i (the same name as I) looks like l too.
_ASCII_LOOK_ALIKES = str.maketrans("01i|", "olll")


def name_skeleton(name: str) -> str:
    """What ``name`` looks like: NFKC, look-alikes made Latin, case folded, 0/O and 1/l/I as one."""
    latin = name if name.isascii() else unicodedata.normalize("NFKC", name).translate(_LOOK_ALIKES)
    return latin.casefold().translate(_ASCII_LOOK_ALIKES)


class Manifest(_Model):
    """The desired set of evaluation users of one environment."""

    apiVersion: Literal["reconcile/v1"]
    environment: Environment
    partner: Partner
    defaults: Defaults = Defaults()
    policy: Policy = Policy()
    backend: Backend | None = None
    users: tuple[User, ...] = ()

    @model_validator(mode="after")
    def _cross_references(self, info: ValidationInfo) -> Manifest:
        if info.context and info.context.get(CROSS_CHECKS_BY_CALLER):
            return self
        keys = [UserKeys.of(u) for u in self.users]
        problems = list(cross_reference_problems(keys, KnownNames.of(self.partner)))
        if problems:
            raise ValueError("; ".join(f"{dotted_path(p.path)}: {p.message}" for p in problems))
        return self

    @property
    def agreement_alert_id(self) -> int:
        """The AdminAlert id of the Market Data Agreement for this environment."""
        if self.partner.agreementAlertId is not None:
            return self.partner.agreementAlertId
        return DEFAULT_AGREEMENT_ALERT_ID[self.environment]

    @property
    def simplus_id(self) -> int | None:
        """The Sim+ entitlement id, if the organization defines one."""
        return self.partner.entitlements.get(SIMPLUS)

    def subscription_plan_for(self, user: User) -> int | None:
        """The subscription plan id a user is created with."""
        if user.tradovateSubscriptionPlanId is not None:
            return user.tradovateSubscriptionPlanId
        return self.defaults.tradovateSubscriptionPlanId


def dotted_path(path: tuple[str | int, ...]) -> str:
    """Render a data path as people write it: ``users[3].email``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out
