"""Credentials by name, and the Secret type that never shows a key."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest

from throttle.errors import ConfigError
from throttle.providers.credentials import Secret, env_var_for, load_credential, redact

KEY = "sk-live-SECRET-0123456789"


def test_secret_is_masked_everywhere(caplog: pytest.LogCaptureFixture) -> None:
    secret = Secret(KEY)
    rendered = [
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        "{}".format(secret),  # noqa: UP032
        "%s" % (secret,),  # noqa: UP031
        repr([secret]),
    ]
    assert all(KEY not in text for text in rendered)
    assert secret.reveal() == KEY
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("t").warning("key %s %r", secret, {"k": secret})
    assert KEY not in caplog.text
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(secret)


def test_env_var_naming() -> None:
    assert env_var_for("openai-prod") == "LLM_THROTTLE_KEY_OPENAI_PROD"
    assert env_var_for("azure.eu-west") == "LLM_THROTTLE_KEY_AZURE_EU_WEST"


def test_environment_first_then_file(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.write_text(
        "# comment\n\nopenai-prod = from-file\nanthropic=ant-key \nanthropic = second\n"
    )
    env = {"LLM_THROTTLE_KEY_OPENAI_PROD": "from-env", "LLM_THROTTLE_SECRETS_FILE": str(secrets)}
    assert load_credential("openai-prod", environ=env).reveal() == "from-env"
    assert load_credential("anthropic", environ=env).reveal() == "ant-key"


def test_missing_credential_names_it_without_any_key(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.write_text(f"other = {KEY}\n")
    env = {"LLM_THROTTLE_SECRETS_FILE": str(secrets)}
    with pytest.raises(ConfigError) as info:
        load_credential("openai-prod", environ=env)
    message = str(info.value)
    assert "'openai-prod'" in message and "LLM_THROTTLE_KEY_OPENAI_PROD" in message
    assert KEY not in message
    with pytest.raises(ConfigError, match="LLM_THROTTLE_SECRETS_FILE"):
        load_credential("openai-prod", environ={})


def test_unreadable_file_and_bad_names(tmp_path: Path) -> None:
    env = {"LLM_THROTTLE_SECRETS_FILE": str(tmp_path / "absent")}
    with pytest.raises(ConfigError, match="cannot be read"):
        load_credential("x", environ=env)
    for bad in ("", "has space", "../etc", None):
        with pytest.raises(ConfigError, match="invalid credential name"):
            load_credential(bad, environ={})  # type: ignore[arg-type]


def test_redact() -> None:
    assert redact(f"oops {KEY}!", [Secret(KEY)]) == "oops ****!"
    assert (
        redact("key: sk-proj-abc123def456 and AIzaSyA1234567890123456789012")
        == "key: **** and ****"
    )
    assert redact("Authorization: Bearer abc.def") == "Authorization: ****"
