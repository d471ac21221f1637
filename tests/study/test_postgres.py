"""The throwaway PostgreSQL of study.postgres is a real server: passwords are checked, and two
Optuna RDBStorage objects (two connection pools) see each other's writes."""

from __future__ import annotations

import os

import pytest
from study import postgres

optuna = pytest.importorskip("optuna")
psycopg = pytest.importorskip("psycopg")

from lstm_jax.errors import UserError  # noqa: E402  (after the skips: lstm_jax.study needs Optuna)
from lstm_jax.study import optuna_api  # noqa: E402


def test_password_is_checked(postgres_url):
    with psycopg.connect(postgres_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_user, current_database(), inet_server_addr()::text, current_setting('fsync')")
        assert cur.fetchone() == ("study_user", "study", "127.0.0.1/32", "off")
    conn.close()
    wrong = postgres_url.replace("study_user:", "study_user:not-", 1)
    assert wrong != postgres_url
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong)


# The trial is asked and told by hand, across two storages, rather than run by Study.optimize.
@pytest.mark.filterwarnings("ignore:Argument ``heartbeat_interval`` is an experimental feature")
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_two_storages_share_a_study(postgres_url):
    # The study extra's driver is psycopg (3), which SQLAlchemy 2.1 takes for a bare postgresql://.
    url = postgres_url.replace("postgresql://", "postgresql+psycopg://", 1)
    first = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=2)
    second = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=2)
    try:
        study = optuna.create_study(storage=first, study_name="round-trip", direction="minimize")
        trial = study.ask()
        x = trial.suggest_float("x", -1.0, 1.0)
        # The trial asked through the first storage is finished through the second ...
        optuna.load_study(study_name="round-trip", storage=second).tell(trial.number, x * x)
        # ... and read back through both.
        for storage in (first, second):
            (read,) = optuna.load_study(study_name="round-trip", storage=storage).get_trials()
            assert (read.number, read.state, read.params, read.value) == (
                trial.number, optuna.trial.TrialState.COMPLETE, {"x": x}, x * x)
        # Each storage holds its own pooled connection: with the probe below, three sessions of study_user.
        with psycopg.connect(postgres_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'study_user'")
            assert cur.fetchone()[0] >= 3
        conn.close()
    finally:
        first.remove_session()
        second.remove_session()
        first.engine.dispose()
        second.engine.dispose()


@pytest.mark.skipif(os.geteuid() != 0, reason="only under root does the server run as another user")
def test_a_folder_the_server_user_cannot_reach(tmp_path):
    postgres.postgres_or_skip()
    # Like /tmp/pytest-of-root, where tmp_path lies: root's own and 0700, so the postgres user cannot get in.
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(RuntimeError, match=f"cannot reach {private}/lstm_jax-pg-"), postgres.server(parent=private):
        pass
    assert list(private.iterdir()) == []


def test_a_url_without_its_password_takes_pgpassword(postgres_url, monkeypatch):
    """The standard libpq ways keep the password out of the URL (and so out of every record)."""
    password = postgres_url.split(":")[2].split("@")[0]
    bare = postgres_url.replace(f":{password}@", "@")
    monkeypatch.setenv("PGPASSWORD", password)
    store = optuna_api.storage(bare, heartbeat_seconds=1)
    assert optuna_api.study_names(store) is not None
    monkeypatch.setenv("PGPASSWORD", "wrong")
    with pytest.raises(UserError, match="password authentication failed") as e:
        optuna_api.storage(bare, heartbeat_seconds=1)
    assert password not in str(e.value)
