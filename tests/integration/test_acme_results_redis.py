"""ACME validation results in a real redis-server (infra/acme/results.py, RedisValidationResults): what a job puts
through one store object (a `csm worker` anywhere) another (a server's validator) takes, oldest first, until it is
marked done; a result taken and not marked done (a crash) is taken again; the embedded default stays a file."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis_fixture import redis_url  # noqa: F401

from domain.acme_authz import ChallengeFailed, ChallengeValidated
from infra.acme.results import RedisValidationResults, SQLiteValidationResults, open_results

pytest.importorskip("redis")


def test_results_put_by_a_worker_are_taken_by_a_server_until_done(redis_url):  # noqa: F811
    worker, server = RedisValidationResults(redis_url), RedisValidationResults(redis_url)
    try:
        assert server.take() == []
        worker.put("t1", "authz-1", ChallengeValidated(challenge_id="c1", address="127.0.0.1"))
        worker.put("t2", "authz-2", ChallengeFailed(challenge_id="c2", error_type="dns", detail="NXDOMAIN"))
        taken = server.take()
        assert [(tenant, authz, result) for _, tenant, authz, result in taken] == [
            ("t1", "authz-1", ChallengeValidated(challenge_id="c1", address="127.0.0.1")),
            ("t2", "authz-2", ChallengeFailed(challenge_id="c2", error_type="dns", detail="NXDOMAIN"))]
        assert [row[0] for row in server.take(limit=1)] == [taken[0][0]]
        server.done(taken[0][0])
        # the second was not marked done (the server stopped before): any server takes it again
        again = RedisValidationResults(redis_url)
        try:
            assert [row[:3] for row in again.take()] == [taken[1][:3]]
            again.done(taken[1][0])
            assert again.take() == [] and server.take() == []
        finally:
            again.close()
    finally:
        worker.close()
        server.close()


def test_redis_carries_the_results_only_where_the_jobs_go(tmp_path, redis_url):  # noqa: F811
    path = tmp_path / "acme-validations.db"
    chosen = open_results(path, "redis", redis_url)
    try:
        assert isinstance(chosen, RedisValidationResults) and not path.exists()
    finally:
        chosen.close()
    for jobs, url in (("in-process", redis_url), ("in-process", None)):
        local = open_results(path, jobs, url)
        try:
            assert isinstance(local, SQLiteValidationResults) and path.exists()
        finally:
            local.close()


text = st.text(st.characters(exclude_categories=("Cs",)), max_size=200)  # any Unicode a detail may quote
results = st.one_of(st.builds(ChallengeValidated, challenge_id=text, address=text),
                    st.builds(ChallengeFailed, challenge_id=text, error_type=text, detail=text))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(st.tuples(text, text, results), min_size=1, max_size=5))
def test_whatever_a_job_puts_a_server_takes_back_unchanged_in_order(redis_url, batch):  # noqa: F811
    worker, server = RedisValidationResults(redis_url), RedisValidationResults(redis_url)
    try:
        for tenant_id, authz_id, result in batch:
            worker.put(tenant_id, authz_id, result)
        taken = server.take()
        for seq, *_ in taken:
            server.done(seq)
        assert [row[1:] for row in taken] == batch and server.take() == []
    finally:
        worker.close()
        server.close()
