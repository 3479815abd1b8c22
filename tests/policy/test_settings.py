"""Settings: the defaults of each environment, and a clear error naming every bad variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from policy.settings import (
    BareNewline,
    Environment,
    HostPort,
    ListenAddress,
    Settings,
    SettingsError,
    check_serve,
    load_settings,
)

SECRET = "0123456789abcdef" * 4  # 64 characters, as `openssl rand -hex 32` prints
OLD_SECRET = "fedcba9876543210" * 2  # exactly the 32-character minimum

# What production cannot start without.
PRODUCTION = {
    "OPENSEND_ENV": "production",
    "OPENSEND_REPLY_TOKEN_SECRET": SECRET,
    "OPENSEND_DATABASE_URL": "postgresql://opensend@db.example.test/opensend",
}


def load(tmp_path: Path, **env: str) -> Settings:
    """Settings from an environment the test writes; the hostname is fixed to avoid DNS."""
    base = {"OPENSEND_DATA_DIR": str(tmp_path), "OPENSEND_HOSTNAME": "mx.example.test"}
    base.update(env)
    return load_settings(base)


# -- defaults ---------------------------------------------------------------------------------


def test_development_listens_on_loopback_and_unprivileged_ports(tmp_path: Path) -> None:
    settings = load(tmp_path)
    assert settings.env is Environment.DEVELOPMENT
    assert not settings.production
    assert settings.mx_listen == ListenAddress("127.0.0.1", 2525)
    assert settings.submission_listen == ListenAddress("127.0.0.1", 2587)
    assert settings.submissions_listen == ListenAddress("127.0.0.1", 2465)
    assert settings.api_listen == ListenAddress("127.0.0.1", 8025)
    assert settings.metrics_listen == ListenAddress("127.0.0.1", 9025)
    assert settings.log_format == "text"


def test_production_listens_on_the_standard_mail_ports(tmp_path: Path) -> None:
    settings = load(tmp_path, **PRODUCTION)
    assert settings.env is Environment.PRODUCTION
    assert settings.production
    assert settings.mx_listen == ListenAddress("0.0.0.0", 25)
    assert settings.submission_listen == ListenAddress("0.0.0.0", 587)
    assert settings.submissions_listen == ListenAddress("0.0.0.0", 465)
    # The API stays behind the operator's reverse proxy.
    assert settings.api_listen == ListenAddress("127.0.0.1", 8025)
    assert settings.metrics_listen == ListenAddress("127.0.0.1", 9025)
    assert settings.log_format == "json"


def test_development_defaults_for_delivery_limits_and_secrets(tmp_path: Path) -> None:
    settings = load(tmp_path)
    assert settings.retry_schedule == (60, 300, 900, 3600, 4 * 3600, 12 * 3600)
    assert settings.max_queue_age == 5 * 86400
    assert settings.max_recipients == 100  # RFC 5321 4.5.3.1.8's minimum
    assert settings.max_message_size == 25 * 1024 * 1024
    assert settings.reply_token_secret is None
    assert settings.reply_token_secrets_previous == ()
    assert settings.transports == {}
    assert settings.dns_servers == ()
    assert settings.tls_cert is None
    assert not settings.tls_configured
    assert settings.log_level == "INFO"
    assert settings.data_dir == tmp_path.resolve()
    assert settings.database_url is None  # the embedded cluster
    # RFC 5321 section 4.5.3.2: 5 minutes for commands, 10 minutes between DATA blocks.
    assert (settings.command_timeout, settings.data_timeout) == (300.0, 600.0)


def test_environment_name_is_case_insensitive(tmp_path: Path) -> None:
    settings = load(tmp_path, **{**PRODUCTION, "OPENSEND_ENV": " Production "})
    assert settings.production


# -- values that parse ------------------------------------------------------------------------


def test_ipv6_listen_address_in_brackets(tmp_path: Path) -> None:
    settings = load(tmp_path, OPENSEND_MX_LISTEN="[::1]:2525")
    assert settings.mx_listen == ListenAddress("::1", 2525)
    assert str(settings.mx_listen) == "[::1]:2525"


def test_ipv4_listen_address_renders_as_host_port(tmp_path: Path) -> None:
    settings = load(tmp_path, OPENSEND_API_LISTEN="0.0.0.0:8080")
    assert str(settings.api_listen) == "0.0.0.0:8080"


def test_listen_port_zero_asks_for_an_ephemeral_port(tmp_path: Path) -> None:
    assert load(tmp_path, OPENSEND_MX_LISTEN="127.0.0.1:0").mx_listen.port == 0


def test_transports_map_domains_to_host_and_port_defaulting_to_25(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        OPENSEND_TRANSPORTS=(
            "Example.NET.=127.0.0.1:2526, example.org=mx.example.org,ipv6.example=[::1]:2527"
        ),
    )
    assert settings.transports == {
        "example.net": HostPort("127.0.0.1", 2526),
        "example.org": HostPort("mx.example.org", 25),
        "ipv6.example": HostPort("::1", 2527),
    }


def test_dns_servers_default_to_port_53(tmp_path: Path) -> None:
    settings = load(tmp_path, OPENSEND_DNS_SERVERS="127.0.0.1:5353, 192.0.2.53, [::1]:5354")
    assert settings.dns_servers == (
        HostPort("127.0.0.1", 5353),
        HostPort("192.0.2.53", 53),
        HostPort("::1", 5354),
    )


def test_reply_token_secret_is_read_as_bytes(tmp_path: Path) -> None:
    settings = load(tmp_path, OPENSEND_REPLY_TOKEN_SECRET=f"  {SECRET}  ")
    assert settings.reply_token_secret == SECRET.encode()


def test_previous_secrets_are_read_from_a_comma_list(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        OPENSEND_REPLY_TOKEN_SECRET=SECRET,
        OPENSEND_REPLY_TOKEN_SECRET_PREVIOUS=f"{OLD_SECRET}, {'a' * 40},",
    )
    assert settings.reply_token_secrets_previous == (OLD_SECRET.encode(), b"a" * 40)


def test_retry_schedule_and_queue_age_take_units(tmp_path: Path) -> None:
    settings = load(
        tmp_path, OPENSEND_RETRY_SCHEDULE="30s, 2M,1h,90,1d", OPENSEND_MAX_QUEUE_AGE="3d"
    )
    assert settings.retry_schedule == (30, 120, 3600, 90, 86400)
    assert settings.max_queue_age == 3 * 86400


def test_tls_cert_and_key_together(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("cert")
    key.write_text("key")
    settings = load(tmp_path, OPENSEND_TLS_CERT=str(cert), OPENSEND_TLS_KEY=str(key))
    assert (settings.tls_cert, settings.tls_key) == (cert, key)
    assert settings.tls_configured


def test_log_level_and_format_are_case_insensitive(tmp_path: Path) -> None:
    settings = load(tmp_path, OPENSEND_LOG_LEVEL="debug", OPENSEND_LOG_FORMAT="JSON")
    assert (settings.log_level, settings.log_format) == ("DEBUG", "json")


def test_numeric_limits_are_read(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        OPENSEND_MAX_MESSAGE_SIZE="1048576",
        OPENSEND_MAX_RECIPIENTS="500",
        OPENSEND_MAX_CONNECTIONS="20",
        OPENSEND_COMMAND_TIMEOUT="30",
        OPENSEND_DATA_TIMEOUT="2m",
        OPENSEND_MAX_RECEIVED_HEADERS="30",
        OPENSEND_MX_PROCESSES="4",
    )
    assert settings.max_message_size == 1048576
    assert settings.max_recipients == 500
    assert settings.max_connections == 20
    assert settings.command_timeout == 30.0
    assert settings.data_timeout == 120.0
    assert settings.max_received_headers == 30
    assert settings.mx_processes == 4


def test_submission_login_limits_default_to_five_failures_fifteen_minutes_one_second(
    tmp_path: Path,
) -> None:
    settings = load(tmp_path)
    assert settings.auth_max_failures == 5
    assert settings.auth_lockout == 900.0
    assert settings.auth_failure_delay == 1.0


@pytest.mark.parametrize(
    ("delay", "seconds"),
    [("0", 0.0), ("250ms", 0.25), ("2s", 2.0), ("3", 3.0)],
    ids=["off", "milliseconds", "seconds", "plain_seconds"],
)
def test_submission_login_limits_are_read(tmp_path: Path, delay: str, seconds: float) -> None:
    settings = load(
        tmp_path,
        OPENSEND_AUTH_MAX_FAILURES="10",
        OPENSEND_AUTH_LOCKOUT="1h",
        OPENSEND_AUTH_FAILURE_DELAY=delay,
    )
    assert (settings.auth_max_failures, settings.auth_lockout) == (10, 3600.0)
    assert settings.auth_failure_delay == seconds


def test_serving_the_mta_in_production_needs_a_certificate_for_submission(
    tmp_path: Path,
) -> None:
    settings = load(tmp_path, **PRODUCTION)
    for only in (None, "mta"):
        with pytest.raises(SettingsError) as raised:
            check_serve(settings, only)
        assert str(raised.value).startswith("OPENSEND_TLS_CERT and OPENSEND_TLS_KEY: required")
    check_serve(settings, "api")  # the API alone needs none
    check_serve(load(tmp_path), None)  # development makes its own


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("OPENSEND_REPLY_TOKEN_SECRET", "", id="reply_token_secret"),
        pytest.param("OPENSEND_REPLY_TOKEN_SECRET", "   ", id="blank_reply_token_secret"),
        pytest.param("OPENSEND_DATABASE_URL", "", id="database_url"),
        pytest.param("OPENSEND_HOSTNAME", "", id="hostname"),
    ],
)
def test_production_without_a_required_setting_is_refused(
    tmp_path: Path, name: str, value: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        load(tmp_path, **{**PRODUCTION, name: value})
    assert str(raised.value).startswith(f"{name}: required")


def test_development_needs_no_secret_database_or_hostname(tmp_path: Path) -> None:
    settings = load_settings({"OPENSEND_DATA_DIR": str(tmp_path), "OPENSEND_HOSTNAME": "h"})
    assert (settings.reply_token_secret, settings.database_url) == (None, None)


MALFORMED = [
    # Environment
    pytest.param("OPENSEND_ENV", "staging", id="env_unknown"),
    # Listen addresses
    pytest.param("OPENSEND_MX_LISTEN", "127.0.0.1", id="mx_listen_without_port"),
    pytest.param("OPENSEND_MX_LISTEN", ":2525", id="mx_listen_without_host"),
    pytest.param("OPENSEND_MX_LISTEN", "127.0.0.1:smtp", id="mx_listen_port_named"),
    pytest.param("OPENSEND_MX_LISTEN", "127.0.0.1:-1", id="mx_listen_port_negative"),
    pytest.param("OPENSEND_MX_LISTEN", "127.0.0.1:65536", id="mx_listen_port_too_high"),
    pytest.param("OPENSEND_SUBMISSION_LISTEN", "[::1:2587", id="submission_listen_unclosed"),
    pytest.param("OPENSEND_SUBMISSION_LISTEN", "[::1]", id="submission_listen_ipv6_no_port"),
    pytest.param("OPENSEND_SUBMISSIONS_LISTEN", "::1:2465", id="submissions_listen_bare_ipv6"),
    pytest.param("OPENSEND_SUBMISSIONS_LISTEN", "[]:2465", id="submissions_listen_empty_host"),
    pytest.param("OPENSEND_API_LISTEN", "127.0.0.1:80800", id="api_listen_port_too_high"),
    pytest.param("OPENSEND_METRICS_LISTEN", "localhost:9o25", id="metrics_listen_port_typo"),
    # Durations and the retry schedule
    pytest.param("OPENSEND_MAX_QUEUE_AGE", "0", id="queue_age_zero"),
    pytest.param("OPENSEND_MAX_QUEUE_AGE", "forever", id="queue_age_word"),
    pytest.param("OPENSEND_MAX_QUEUE_AGE", "1.5d", id="queue_age_fraction"),
    pytest.param("OPENSEND_MAX_QUEUE_AGE", "-5m", id="queue_age_negative"),
    pytest.param("OPENSEND_MAX_QUEUE_AGE", "5w", id="queue_age_weeks"),
    pytest.param("OPENSEND_RETRY_SCHEDULE", "1m,,5m", id="retry_empty_step"),
    pytest.param("OPENSEND_RETRY_SCHEDULE", "1m,0s", id="retry_zero_step"),
    pytest.param("OPENSEND_RETRY_SCHEDULE", "1m;5m", id="retry_semicolons"),
    pytest.param("OPENSEND_RETRY_SCHEDULE", "1m,5 m", id="retry_inner_space"),
    # Transports and DNS servers
    pytest.param("OPENSEND_TRANSPORTS", "example.net", id="transport_without_target"),
    pytest.param("OPENSEND_TRANSPORTS", "example.net=", id="transport_empty_target"),
    pytest.param("OPENSEND_TRANSPORTS", "=127.0.0.1:2526", id="transport_without_domain"),
    pytest.param("OPENSEND_TRANSPORTS", "example.net=127.0.0.1:70000", id="transport_port"),
    pytest.param("OPENSEND_TRANSPORTS", "example.net=:2526", id="transport_without_host"),
    pytest.param("OPENSEND_DNS_SERVERS", "127.0.0.1:99999", id="dns_port_too_high"),
    pytest.param("OPENSEND_DNS_SERVERS", "[::1", id="dns_unclosed_bracket"),
    pytest.param(
        "OPENSEND_DNS_SERVERS",
        "[::1]5353",
        id="dns_garbage_after_bracket",
    ),
    # Secrets
    pytest.param("OPENSEND_REPLY_TOKEN_SECRET", "short", id="secret_too_short"),
    pytest.param("OPENSEND_REPLY_TOKEN_SECRET", "x" * 31, id="secret_one_short"),
    pytest.param(
        "OPENSEND_REPLY_TOKEN_SECRET_PREVIOUS", f"{OLD_SECRET},short", id="previous_too_short"
    ),
    # Files
    pytest.param("OPENSEND_TLS_CERT", "/nonexistent/cert.pem", id="tls_cert_missing"),
    pytest.param("OPENSEND_TLS_KEY", "/nonexistent/key.pem", id="tls_key_missing"),
    pytest.param("OPENSEND_TLS_CERT", "{tmp}", id="tls_cert_directory"),
    # The SES ingester
    pytest.param("OPENSEND_SES_TOPIC_ARNS", "ses-inbound", id="ses_topic_name_not_arn"),
    pytest.param(
        "OPENSEND_SES_TOPIC_ARNS",
        "arn:aws:sqs:us-east-1:123456789012:queue",
        id="ses_topic_of_another_service",
    ),
    pytest.param("OPENSEND_SES_CERT_HOST_PATTERN", "sns\\.(", id="ses_cert_pattern_unclosed"),
    pytest.param("OPENSEND_SES_CA_FILE", "/nonexistent/ca.pem", id="ses_ca_file_missing"),
    pytest.param("OPENSEND_SES_MAX_AGE", "forever", id="ses_max_age_word"),
    pytest.param("OPENSEND_SES_S3_REGION", "US East", id="ses_region_words"),
    pytest.param("OPENSEND_SES_S3_ENDPOINT", "s3.example.test", id="ses_endpoint_no_scheme"),
    pytest.param("OPENSEND_SES_S3_BUCKETS", "mail,Inbound_Mail", id="ses_bucket_uppercase"),
    pytest.param("OPENSEND_SES_S3_BUCKETS", "s3://mail", id="ses_bucket_as_url"),
    pytest.param(
        "OPENSEND_SES_S3_ENDPOINT", "https://s3.example.test/bucket", id="ses_endpoint_path"
    ),
    # Logging
    pytest.param("OPENSEND_LOG_LEVEL", "verbose", id="log_level_unknown"),
    pytest.param("OPENSEND_LOG_FORMAT", "xml", id="log_format_unknown"),
    # Numeric limits
    pytest.param("OPENSEND_MAX_MESSAGE_SIZE", "10MB", id="message_size_with_unit"),
    pytest.param("OPENSEND_MAX_MESSAGE_SIZE", "0", id="message_size_zero"),
    pytest.param("OPENSEND_DATA_MEMORY", "26214399", id="data_memory_below_message_size"),
    pytest.param("OPENSEND_DATA_MEMORY", "1GiB", id="data_memory_with_unit"),
    pytest.param("OPENSEND_TRUSTED_PROXIES", "127.0.0.1, proxy.local", id="trusted_proxy_name"),
    pytest.param("OPENSEND_MAX_RECIPIENTS", "0", id="recipients_zero"),
    pytest.param("OPENSEND_MAX_RECIPIENTS", "-1", id="recipients_negative"),
    pytest.param("OPENSEND_MAX_CONNECTIONS", "1e3", id="connections_exponent"),
    pytest.param("OPENSEND_COMMAND_TIMEOUT", "soon", id="command_timeout_word"),
    pytest.param("OPENSEND_COMMAND_TIMEOUT", "0", id="command_timeout_zero"),
    pytest.param("OPENSEND_DATA_TIMEOUT", "1.5", id="data_timeout_fraction"),
    pytest.param("OPENSEND_MAX_RECEIVED_HEADERS", "many", id="received_headers_word"),
    pytest.param("OPENSEND_MX_PROCESSES", "0", id="mx_processes_zero"),
    pytest.param("OPENSEND_AUTH_MAX_FAILURES", "0", id="auth_max_failures_zero"),
    pytest.param("OPENSEND_AUTH_LOCKOUT", "0", id="auth_lockout_zero"),
    pytest.param("OPENSEND_AUTH_LOCKOUT", "a while", id="auth_lockout_words"),
    pytest.param("OPENSEND_AUTH_FAILURE_DELAY", "1.5s", id="auth_delay_fraction"),
    pytest.param("OPENSEND_AUTH_FAILURE_DELAY", "-1", id="auth_delay_negative"),
    pytest.param("OPENSEND_AUTH_FAILURE_DELAY", "ms", id="auth_delay_unit_only"),
    pytest.param(
        "OPENSEND_MAX_RECIPIENTS",
        "\u00b9\u2070\u2070",
        id="recipients_superscript_digits",
    ),
]


@pytest.mark.parametrize(("name", "value"), MALFORMED)
def test_malformed_value_raises_settings_error_naming_the_variable(
    tmp_path: Path, name: str, value: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        load(tmp_path, **{name: value.replace("{tmp}", str(tmp_path))})
    assert name in str(raised.value)


@pytest.mark.parametrize(
    ("present", "absent"),
    [
        pytest.param("OPENSEND_TLS_CERT", "OPENSEND_TLS_KEY", id="cert_without_key"),
        pytest.param("OPENSEND_TLS_KEY", "OPENSEND_TLS_CERT", id="key_without_cert"),
    ],
)
def test_tls_cert_and_key_must_be_set_together(tmp_path: Path, present: str, absent: str) -> None:
    pem = tmp_path / "one.pem"
    pem.write_text("pem")
    with pytest.raises(SettingsError) as raised:
        load(tmp_path, **{present: str(pem)})
    assert present in str(raised.value)
    assert absent in str(raised.value)


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


def test_the_ses_ingester_is_off_without_topics_and_tight_by_default(tmp_path: Path) -> None:
    ses = load(tmp_path).ses
    assert not ses.enabled
    assert ses.topic_arns == frozenset()
    assert ses.cert_host.fullmatch("sns.eu-west-1.amazonaws.com")
    assert not ses.cert_host.fullmatch("sns.s3.amazonaws.com")
    assert (ses.ca_file, ses.s3_region, ses.s3_endpoint) == (None, None, None)
    assert ses.max_age == 75 * 60  # SNS retries for an hour at most, plus clock skew


def test_the_ses_ingester_reads_its_topics_and_s3_endpoint(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("pem")
    ses = load(
        tmp_path,
        OPENSEND_SES_TOPIC_ARNS=(
            " arn:aws:sns:eu-west-1:123456789012:ses-inbound,"
            "arn:aws-cn:sns:cn-north-1:123456789012:inbound_cn "
        ),
        OPENSEND_SES_CA_FILE=str(ca),
        OPENSEND_SES_MAX_AGE="2h",
        OPENSEND_SES_S3_REGION="eu-west-1",
        OPENSEND_SES_S3_ENDPOINT="http://127.0.0.1:9000",
        OPENSEND_SES_S3_BUCKETS=" inbound-mail , mail.example.com",
    ).ses
    assert ses.enabled
    assert ses.s3_buckets == {"inbound-mail", "mail.example.com"}
    assert ses.reads_bucket("inbound-mail") and not ses.reads_bucket("private-reports")
    assert ses.topic_arns == {
        "arn:aws:sns:eu-west-1:123456789012:ses-inbound",
        "arn:aws-cn:sns:cn-north-1:123456789012:inbound_cn",
    }
    assert (ses.ca_file, ses.max_age, ses.s3_region, ses.s3_endpoint) == (
        ca,
        7200,
        "eu-west-1",
        "http://127.0.0.1:9000",
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("", True), ("on", True), ("OFF", False), ("false", False), ("1", True)],
    ids=["default", "on", "off_upper", "false", "one"],
)
def test_auth_checks_run_beside_the_mx_unless_turned_off(
    tmp_path: Path, raw: str, expected: bool
) -> None:
    assert load(tmp_path, OPENSEND_AUTH_CHECKS=raw).auth_checks is expected


def test_auth_checks_setting_other_than_on_or_off_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="OPENSEND_AUTH_CHECKS: 'sometimes' is not one of"):
        load(tmp_path, OPENSEND_AUTH_CHECKS="sometimes")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", BareNewline.REJECT),
        ("reject", BareNewline.REJECT),
        ("Normalize", BareNewline.NORMALIZE),
    ],
    ids=["default", "reject", "normalize_capitalised"],
)
def test_bare_newlines_are_refused_unless_normalising_is_asked_for(
    tmp_path: Path, raw: str, expected: BareNewline
) -> None:
    assert load(tmp_path, OPENSEND_BARE_NEWLINE=raw).bare_newline is expected


def test_a_bare_newline_choice_outside_the_list_is_refused_naming_the_choices(
    tmp_path: Path,
) -> None:
    with pytest.raises(
        SettingsError, match="OPENSEND_BARE_NEWLINE: 'yes' is not one of reject, normalize"
    ):
        load(tmp_path, OPENSEND_BARE_NEWLINE="yes")


def test_the_data_memory_budget_is_twenty_of_the_largest_messages_unless_set(
    tmp_path: Path,
) -> None:
    assert load(tmp_path).data_memory == 20 * 26_214_400
    assert load(tmp_path, OPENSEND_MAX_MESSAGE_SIZE="1000000").data_memory == 20_000_000
    assert load(tmp_path, OPENSEND_DATA_MEMORY="26214400").data_memory == 26_214_400
