"""`triage token create/list/revoke`."""

from __future__ import annotations

import sqlalchemy as sa

from service.cli import main
from service.store.models import ApiToken
from tests.web.api.conftest import Api, error_of


def test_token_create_prints_the_token_once_and_it_works(runner, client, db, clinic):
    result = runner.invoke(main, args=["token", "create", "--clinic", str(clinic.id),
                                 "--name", "EHR sync"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert token.startswith("tri_") and "\n" not in token
    assert "shown once" in result.stderr
    assert Api(client, token).get("/patients").status_code == 200
    with db.transaction() as session:
        row = session.execute(sa.select(ApiToken)).scalar_one()
        assert (row.name, row.clinic_id, row.read_only) == ("EHR sync", clinic.id, False)
        assert row.token_hash != token

    listed = runner.invoke(main, args=["token", "list"])
    assert f"{row.id}\t{clinic.id}\tEHR sync\tread-write" in listed.output
    assert token not in listed.output

    revoked = runner.invoke(main, args=["token", "revoke", str(row.id)])
    assert revoked.exit_code == 0, revoked.output
    error_of(Api(client, token).get("/patients"), 401)


def test_token_create_read_only(runner, client, clinic):
    result = runner.invoke(main, args=["token", "create", "--clinic", str(clinic.id), "--name",
                                 "reports", "--read-only"])
    api = Api(client, result.stdout.strip())
    assert api.get("/alerts").status_code == 200
    error_of(api.post("/patients", json={"phone": "+16175550170"}), 403)


def test_token_create_refuses_an_unknown_clinic_or_an_empty_name(runner, clinic):
    result = runner.invoke(main, args=["token", "create", "--clinic", "999", "--name", "x"])
    assert result.exit_code != 0 and "no clinic 999" in result.output
    result = runner.invoke(main, args=["token", "create", "--clinic", str(clinic.id), "--name", " "])
    assert result.exit_code != 0 and "name" in result.output
    assert runner.invoke(main, args=["token", "revoke", "42"]).exit_code != 0
