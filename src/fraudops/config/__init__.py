"""Settings and parameters, each defined once: import either from here.

* ``Settings`` (``settings.py``): where things run, from ``FRAUDOPS_*`` and ``.env``.
* ``Params`` (``params.py``): what the pipeline computes with, from ``params.yaml``.
"""

from fraudops.config.params import (
    ABParams,
    CandidateGrid,
    ExperimentParams,
    FairnessParams,
    FeatureParams,
    HyperValue,
    LearningMode,
    LearningParams,
    ModelFamily,
    MonitorParams,
    OnlineLearnerParams,
    Params,
    PromoteParams,
    ProportionMetric,
    Scenario,
    SimulateParams,
    TrainParams,
    ValidateParams,
    load_params,
)
from fraudops.config.settings import Settings, get_settings

__all__ = [
    "ABParams",
    "CandidateGrid",
    "ExperimentParams",
    "FairnessParams",
    "FeatureParams",
    "HyperValue",
    "LearningMode",
    "LearningParams",
    "ModelFamily",
    "MonitorParams",
    "OnlineLearnerParams",
    "Params",
    "PromoteParams",
    "ProportionMetric",
    "Scenario",
    "Settings",
    "SimulateParams",
    "TrainParams",
    "ValidateParams",
    "get_settings",
    "load_params",
]
