"""Builders of the plan's actions from values the manifest loader and the state store validated.

Each builds its model as ``Model(**values)`` would, without validating again
(:func:`reconcile.bulk.trusted`; tests/test_perf_plan.py proves the plans equal).
"""

from __future__ import annotations

from reconcile.bulk import trusted
from reconcile.planning.plan import (
    CancelEverything,
    ContactPayload,
    CreateAccount,
    CreateUser,
    FieldChange,
    GrantEntitlement,
    Plan,
    ResetAccount,
    RevokeTrading,
    SetTrading,
    SwitchRiskCategory,
    UpdateContact,
    UpdateEmail,
    UpdateRisk,
)

create_user = trusted(CreateUser)
update_email = trusted(UpdateEmail)
update_contact = trusted(UpdateContact)
contact_payload = trusted(ContactPayload)
grant_entitlement = trusted(GrantEntitlement)
cancel_everything = trusted(CancelEverything)
create_account = trusted(CreateAccount)
update_risk = trusted(UpdateRisk)
switch_risk_category = trusted(SwitchRiskCategory)
set_trading = trusted(SetTrading)
reset_account = trusted(ResetAccount)
revoke_trading = trusted(RevokeTrading)
field_change = trusted(FieldChange)
plan = trusted(Plan)
