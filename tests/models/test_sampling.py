"""One validated sampling type: the API schema, the batch pipeline and the models agree on its bounds."""

from __future__ import annotations

import math
import re

import pytest
from pydantic import ValidationError

from musicops.generation import prompts
from musicops.generation.planning import SamplingOptions
from musicops.models import sampling as sp
from musicops.models.base import GenerationParams
from musicops.serving import config as serve_config
from musicops.serving.schemas import Sampling


@pytest.mark.parametrize(("field", "value", "bound"), [
    ("temperature", 0.0, "[0.05, 10]"), ("temperature", 10.5, "[0.05, 10]"), ("temperature", math.nan, "[0.05, 10]"),
    ("guidance_scale", -0.1, "[0, 20]"), ("guidance_scale", 21.0, "[0, 20]"),
    ("top_k", -1, "[0, 2048]"), ("top_k", 2049, "[0, 2048]"),
    ("top_p", -0.1, "[0, 1]"), ("top_p", 1.5, "[0, 1]"),
])
def test_out_of_range_values_name_the_field_and_bound(field: str, value: float, bound: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"{field} must be in {bound}")):
        sp.SamplingParams(**{field: value})
    with pytest.raises(ValueError, match=field):
        GenerationParams(**{field: value})
    with pytest.raises(ValidationError, match=field):
        Sampling(**{field: value})


@pytest.mark.parametrize(("field", "value"), [
    ("temperature", sp.MIN_TEMPERATURE), ("temperature", sp.MAX_TEMPERATURE),
    ("guidance_scale", sp.MIN_GUIDANCE_SCALE), ("guidance_scale", sp.MAX_GUIDANCE_SCALE),
    ("top_k", sp.MIN_TOP_K), ("top_k", sp.MAX_TOP_K), ("top_p", sp.MIN_TOP_P), ("top_p", sp.MAX_TOP_P),
])
def test_the_bounds_are_accepted_everywhere(field: str, value: float) -> None:
    core = sp.SamplingParams(**{field: value})
    assert Sampling(**{field: value}).params() == core
    assert GenerationParams(duration_s=1.0, **{field: value}).sampling() == core


def test_wrong_types_are_refused() -> None:
    with pytest.raises(ValueError, match="top_k must be an integer"):
        sp.SamplingParams(top_k=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="do_sample must be true or false"):
        sp.SamplingParams(do_sample="yes")  # type: ignore[arg-type]


def test_defaults_and_openapi_bounds_come_from_the_core() -> None:
    assert Sampling().params() == sp.SamplingParams() == SamplingOptions()
    schema = Sampling.model_json_schema()["properties"]
    assert schema["temperature"]["maximum"] == sp.MAX_TEMPERATURE
    assert schema["temperature"]["minimum"] == sp.MIN_TEMPERATURE
    assert schema["guidance_scale"]["maximum"] == sp.MAX_GUIDANCE_SCALE
    assert schema["top_k"]["maximum"] == sp.MAX_TOP_K
    assert schema["top_p"]["maximum"] == sp.MAX_TOP_P


def test_one_duration_limit() -> None:
    assert prompts.MAX_DURATION_S is sp.MAX_DURATION_S and prompts.MIN_DURATION_S is sp.MIN_DURATION_S
    assert serve_config.ServeConfig().max_duration_s <= sp.MAX_DURATION_S
    GenerationParams(duration_s=sp.MAX_DURATION_S)
    with pytest.raises(ValueError, match=r"duration_s must be in \(0, 60\]"):
        GenerationParams(duration_s=sp.MAX_DURATION_S + 1)


def test_params_for_a_clip_keep_the_sampling() -> None:
    options = SamplingOptions(temperature=0.7, top_k=50)
    params = options.params(4.0)
    assert isinstance(params, GenerationParams) and params.duration_s == 4.0
    assert params.sampling() == options
    assert list(params.to_dict()) == ["duration_s", "do_sample", "guidance_scale", "temperature", "top_k", "top_p"]
