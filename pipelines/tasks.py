"""The two kinds of Prefect task the flows are made of, with their options in one place.

* ``io_task``: a step that reads or writes files or talks to a server (MLflow, DVC, the
  serving API). A hiccup there is often gone seconds later, so it retries ``IO_RETRIES``
  times, ``IO_RETRY_DELAY_S`` apart.
* ``step_task``: every other step; it runs once, and its failure fails the flow.

Both opt out of Prefect's default cache policy: it hashes every input, and the flows pass
large frames and live clients, which are slow or impossible to hash. The one cached task,
``pipelines.training.build_features``, keys its cache itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import RetryConditionCallable

IO_RETRIES = 2
IO_RETRY_DELAY_S = 2

P = ParamSpec("P")
R = TypeVar("R")


def io_task(
    name: str,
    *,
    task_run_name: str | None = None,
    retry_condition_fn: RetryConditionCallable | None = None,
) -> Callable[[Callable[P, R]], Task[P, R]]:
    """A task NAME that retries; RETRY_CONDITION_FN may refuse a retry that cannot help."""
    return task(
        name=name,
        task_run_name=task_run_name,
        retries=IO_RETRIES,
        retry_delay_seconds=IO_RETRY_DELAY_S,
        retry_condition_fn=retry_condition_fn,
        cache_policy=NO_CACHE,
    )


def step_task(name: str) -> Callable[[Callable[P, R]], Task[P, R]]:
    """A task NAME that runs once, without input hashing."""
    return task(name=name, cache_policy=NO_CACHE)
