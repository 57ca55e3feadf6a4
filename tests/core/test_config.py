"""Configuration: defaults that work on a laptop, and errors that name the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fmn_core.config import CONTEXTS, Config, load_config
from fmn_core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fmn.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_config_defaults_use_sqlite_in_the_state_directory(tmp_path: Path) -> None:
    config = load_config()
    assert config.database_url.startswith("sqlite:///")
    assert str(tmp_path / "state") in config.database_url
    assert config.contexts == CONTEXTS
    assert config.push.allow_private_hosts is False


def test_config_readme_example_loads(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", readme, re.DOTALL)
    assert blocks, "the README shows a configuration example"
    for block in blocks:
        assert isinstance(load_config(_write(tmp_path, block)), Config)


def test_config_unknown_key_is_named_with_the_valid_ones(tmp_path: Path) -> None:
    path = _write(tmp_path, "[smtp]\nhots = 'mail.example.org'\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == "smtp.hots"
    assert "host" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("[smtp]\nport = 'twenty-five'\n", "smtp.port", "whole number"),
        ("[smtp]\nsecurity = 'tls'\n", "smtp.security", "one of"),
        ("[delivery]\nmax_attempts = 0\n", "delivery.max_attempts", "at least 1"),
        ("[ingest]\nbatch_size = 0\n", "ingest.batch_size", "at least 1"),
        ("[ingest]\nbatch_size = 20000\n", "ingest.batch_size", "at most 10000"),
        ("[ingest]\nwriters = 0\n", "ingest.writers", "at least 1"),
        ("[ingest]\nwriters = 9\n", "ingest.writers", "at most 8"),
        ("[ingest]\nmax_inflight_bytes = 4096\n", "ingest.max_inflight_bytes", "at least 1048576"),
        ("contexts = ['email', 'pager']\n", "contexts", "'pager'"),
        ("[push]\nallow_private_hosts = 'yes'\n", "push.allow_private_hosts", "true or false"),
        ("smtp = 3\n", "smtp", "table"),
        ("admins = 'alice'\n", "admins", "list"),
        ("database_url = 'mysql://fmn@db/fmn'\n", "database_url", "not mysql"),
        ("database_url = 'postgresql+asyncpg://db/fmn'\n", "database_url", "postgresql+psycopg"),
        ("database_url = 'sqlite+aiosqlite:///fmn.db'\n", "database_url", "sqlite:///path"),
        ("database_url = 'not a url'\n", "database_url", "not a database URL"),
        ("[bot]\naccount_format = '{nick}'\n", "bot.account_format", "plain {account}"),
        ("[bot]\naccount_format = 'fedora'\n", "bot.account_format", "must contain {account}"),
        ("[bot]\naccount_format = '{account!r}'\n", "bot.account_format", "plain {account}"),
        ("[bot]\naccount_format = '{account'\n", "bot.account_format", "not a format string"),
        ("[fcm]\nproject = 'fmn-android'\n", "fcm.keyfile", "set both, or neither"),
        ("[fcm]\nkeyfile = '/etc/fmn/fcm.json'\n", "fcm.project", "set both, or neither"),
        # Values that were accepted and made the daemon spin, crash or misbehave later.
        ('[smtp]\nfrom_name = "Fedora\\r\\nBcc: x@example.org"\n', "smtp.from_name", "line break"),
        (
            '[smtp]\nfrom_address = "x@example.org\\nBcc: y@example.org"\n',
            "smtp.from_address",
            "control",
        ),
        ("[smtp]\nfrom_address = 'notifications'\n", "smtp.from_address", "not an e-mail address"),
        ("[delivery]\nbatch_size = 0\n", "delivery.batch_size", "from 1 to 10000"),
        ("[delivery]\nidle_poll_seconds = 0\n", "delivery.idle_poll_seconds", "from 0.01"),
        ("[delivery]\nidle_poll_seconds = nan\n", "delivery.idle_poll_seconds", "nan"),
        ("[delivery]\nbackoff_seconds = -5\n", "delivery.backoff_seconds", "from 0"),
        ("[delivery]\nbackoff_max_seconds = 1e300\n", "delivery.backoff_max_seconds", "604800"),
        ("[delivery]\nclaim_lease_seconds = 0\n", "delivery.claim_lease_seconds", "from 1"),
        ("[delivery]\nrate_limit_per_hour = 0\n", "delivery.rate_limit_per_hour", "at least 1"),
        ("[delivery]\nshutdown_grace_seconds = inf\n", "delivery.shutdown_grace_seconds", "inf"),
        ("[delivery]\nsenders = 100000000\n", "delivery.senders", "at most 1000"),
        ("[smtp]\nport = 70000\n", "smtp.port", "from 1 to 65535"),
        ("[smtp]\ntimeout_seconds = 0\n", "smtp.timeout_seconds", "more than 0"),
        ("[smtp]\nhost = ''\n", "smtp.host", "is empty"),
        ("[push]\ntimeout_seconds = nan\n", "push.timeout_seconds", "more than 0"),
        ("[bot]\nlines_per_second = nan\n", "bot.lines_per_second", "more than 0"),
        ("[bot]\nlines_per_second = -1\n", "bot.lines_per_second", "more than 0"),
        ("[bot]\nburst = 0\n", "bot.burst", "from 1"),
        ("[bot]\noffline_hold_minutes = 10000000000000\n", "bot.offline_hold_minutes", "a year"),
        ("[ownership]\nrefresh_minutes = 0\n", "ownership.refresh_minutes", "from 1"),
        (
            "[confirmation]\ncode_window_hours = 9223372036854775807\n",
            "confirmation.code_window_hours",
            "at most 8760",
        ),
        ("[confirmation]\nttl_minutes = 1000000000000\n", "confirmation.ttl_minutes", "at most"),
        ("database_url = 'sqlite://'\n", "database_url", "in-memory"),
        ("database_url = 'sqlite:///:memory:'\n", "database_url", "in-memory"),
        ('database_url = "sqlite:///fmn\\u0000.db"\n', "database_url", "control characters"),
    ],
)
def test_config_bad_value_names_the_key(tmp_path: Path, text: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, text))
    assert caught.value.key == key
    assert words in str(caught.value)


def test_config_missing_or_broken_file_is_an_error_not_a_default(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nowhere.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "this is = = not toml"))


def test_config_environment_variable_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, "contexts = ['email', 'irc']\n")
    monkeypatch.setenv("FMN_CONFIG", str(path))
    assert load_config().contexts == ("email", "irc")


@pytest.mark.parametrize(
    "text",
    [
        "database_url = 'sqlite:////var/lib/fmn/fmn.sqlite'\n",
        "database_url = 'postgresql+psycopg://fmn@db.example.org/fmn'\n",
        "database_url = 'postgresql://fmn@db.example.org/fmn'\n",  # psycopg is the default
        "[bot]\naccount_format = 'fas-{account}'\n",
        "[fcm]\nproject = 'fmn-android'\nkeyfile = '/etc/fmn/fcm.json'\n",
    ],
)
def test_config_accepts_what_fmn_can_use(tmp_path: Path, text: str) -> None:
    assert isinstance(load_config(_write(tmp_path, text)), Config)


def test_config_unsupported_database_never_shows_its_password(tmp_path: Path) -> None:
    path = _write(tmp_path, "database_url = 'mysql://fmn:hunter2@db/fmn'\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "hunter2" not in str(caught.value)


def test_config_repr_hides_every_secret(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "[smtp]\nusername = 'fmn'\npassword = 'smtp-pass-1'\n"
        "[http]\nsecret_key = 'signing-key-2'\n"
        "[accounts]\nfas_username = 'fmnbot'\nfas_password = 'fas-pass-3'\n",
    )
    config = load_config(path)
    assert config.smtp.password == "smtp-pass-1"
    assert config.http.secret_key == "signing-key-2"
    assert config.accounts.fas_password == "fas-pass-3"
    for shown in (
        repr(config),
        str(config),
        repr(config.smtp),
        repr(config.http),
        repr(config.accounts),
    ):
        for secret in ("smtp-pass-1", "signing-key-2", "fas-pass-3"):
            assert secret not in shown
    # What is not secret still shows, so a logged configuration stays useful.
    assert "fmnbot" in repr(config) and "username='fmn'" in repr(config)


def test_config_matrix_bot_is_off_by_default_and_keeps_its_secrets_out_of_repr(
    tmp_path: Path,
) -> None:
    assert not load_config().matrix.configured
    path = _write(
        tmp_path,
        "[matrix]\nhomeserver_url = 'https://matrix.example.org'\nuser_id = '@fmn:example.org'\n"
        "access_token = 'syt_secret_token'\npassword = 'hunter2'\nlines_per_second = 2\n",
    )
    config = load_config(path)
    assert config.matrix.configured and config.matrix.lines_per_second == 2.0
    assert "syt_secret_token" not in repr(config) and "hunter2" not in repr(config)


@pytest.mark.parametrize(
    ("text", "key", "why"),
    [
        (
            "user_id = 'fmn'\nhomeserver_url = 'https://m.example.org'\npassword = 'p'",
            "matrix.user_id",
            "not a Matrix ID",
        ),
        ("homeserver_url = 'https://m.example.org'\npassword = 'p'", "matrix.user_id", "Matrix ID"),
        ("user_id = '@fmn:example.org'\npassword = 'p'", "matrix.homeserver_url", "http(s)"),
        (
            "user_id = '@fmn:example.org'\n"
            "homeserver_url = 'https://u@m.example.org'\npassword = 'p'",
            "matrix.homeserver_url",
            "no user info",
        ),
        (
            "user_id = '@fmn:example.org'\nhomeserver_url = 'https://m.example.org'",
            "matrix.access_token",
            "access_token or matrix.password",
        ),
        ("lines_per_second = 0", "matrix.lines_per_second", "more than 0"),
        ("burst = 0", "matrix.burst", "from 1"),
        ("accounts_server = 'Fedora.IM'", "matrix.accounts_server", "lowercase server name"),
        ("accounts_server = 'fedora.im/x'", "matrix.accounts_server", "lowercase server name"),
    ],
)
def test_config_matrix_bad_settings_name_the_key(
    tmp_path: Path, text: str, key: str, why: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, f"[matrix]\n{text}\n"))
    assert caught.value.key == key
    assert why in str(caught.value)
