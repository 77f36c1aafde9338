"""Dependencies: the Settings and the Predictor the lifespan loaded, overridable in tests."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from kulit.serving.predict import Predictor
from kulit.web.settings import Settings


def get_settings(request: Request) -> Settings:
    return cast("Settings", request.app.state.settings)


def get_predictor(request: Request) -> Predictor:
    return cast("Predictor", request.app.state.predictor)


SettingsDep = Annotated[Settings, Depends(get_settings)]
PredictorDep = Annotated[Predictor, Depends(get_predictor)]
