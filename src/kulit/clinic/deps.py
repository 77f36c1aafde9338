"""Who is asking: a bearer token (API) or a session cookie (pages); and the case store."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kulit.clinic.auth import Actor, actor_of, token_user
from kulit.clinic.config import ClinicSettings
from kulit.clinic.store import CaseStore, ClinicError

bearer = HTTPBearer(auto_error=False, scheme_name="token",
                    description="`kulit clinic token NAME` prints one")


def get_store(request: Request) -> CaseStore:
    return cast("CaseStore", request.app.state.clinic_store)


def get_clinic_settings(request: Request) -> ClinicSettings:
    return cast("ClinicSettings", request.app.state.clinic_settings)


def unauthorized(message: str = "send Authorization: Bearer <token>") -> ClinicError:
    return ClinicError(message, "unauthorized", 401)


def api_actor(request: Request,
              cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Actor:
    if cred is None or cred.scheme.lower() != "bearer" or not cred.credentials:
        raise unauthorized()
    store = get_store(request)
    with store.session() as db:
        user = token_user(db, cred.credentials)
        if user is None:
            raise unauthorized("unknown token")
        return actor_of(user)


StoreDep = Annotated[CaseStore, Depends(get_store)]
ClinicSettingsDep = Annotated[ClinicSettings, Depends(get_clinic_settings)]
ApiActorDep = Annotated[Actor, Depends(api_actor)]
