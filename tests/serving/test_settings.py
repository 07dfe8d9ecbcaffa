"""scripts.serving.settings: settings that cannot work are named with their option, and the replicas' environment."""

from __future__ import annotations

import pytest

from scripts.serving.settings import ServeError, ServeSettings, replica_environment


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_texts": 100, "max_queue": 10}, "--max-texts (100) is more than --max-queue (10)"),
        ({"max_batch_size": 0}, "--max-batch-size is 0: it must be 1 or more"),
        ({"timeout_s": float("inf")}, "--timeout-s is inf"),
        ({"max_wait_ms": -1.0}, "--max-wait-ms is -1.0: it must be 0 or more"),
    ],
)
def test_settings_that_cannot_work_are_named(options: dict, message: str):
    with pytest.raises(ServeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ServeSettings("model", **options)


def test_replicas_get_passive_openmp_threads_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert replica_environment() == {"OMP_WAIT_POLICY": "PASSIVE"}
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert replica_environment() == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_settings_from_a_config_file_name_unknown_keys():
    with pytest.raises(ServeError, match="Unknown setting"):
        ServeSettings.from_mapping({"model": "m", "max_bach_size": 3})
    with pytest.raises(ServeError, match="The args need `model`"):
        ServeSettings.from_mapping({})
