"""Dependencies: the Settings and the Predictor the lifespan loaded, overridable in tests."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from kulit.serving.predict import Predictor
from kulit.web.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_predictor(request: Request) -> Predictor:
    return request.app.state.predictor


SettingsDep = Annotated[Settings, Depends(get_settings)]
PredictorDep = Annotated[Predictor, Depends(get_predictor)]
