"""The Kafka security settings as each client library spells them (kafka-python, aiokafka, librdkafka, Faust).

One set of settings (`kafka_security_protocol`, `kafka_sasl_*`, `kafka_ssl_cafile`) reaches every client the
system creates, so a cluster that requires TLS or SASL works for the worker, the trainer, the producer, the
scorer's replica and the simulator alike. PLAINTEXT (the default) adds nothing.
"""

from __future__ import annotations

import ssl
from typing import Any

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaSecurityError(ValueError):
    """Kafka security settings that do not fit together."""


def check(settings: Any) -> None:
    """Refuses an unknown protocol or mechanism, SASL without credentials, and credentials without SASL."""
    protocol, mechanism = settings.kafka_security_protocol.upper(), settings.kafka_sasl_mechanism.upper()
    if protocol not in PROTOCOLS:
        raise KafkaSecurityError(f"kafka_security_protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    sasl = protocol.startswith("SASL")
    if sasl and mechanism not in MECHANISMS:
        raise KafkaSecurityError(f"{protocol} needs kafka_sasl_mechanism, one of {', '.join(MECHANISMS)}")
    if sasl and not (settings.kafka_sasl_username and settings.kafka_sasl_password):
        raise KafkaSecurityError(f"{protocol} needs kafka_sasl_username and kafka_sasl_password")
    if not sasl and (mechanism or settings.kafka_sasl_username):
        raise KafkaSecurityError(f"SASL settings are set but kafka_security_protocol is {protocol}")
    if settings.kafka_ssl_cafile and not protocol.endswith("SSL"):
        raise KafkaSecurityError(f"kafka_ssl_cafile is set but kafka_security_protocol is {protocol}")


def _ssl_context(settings: Any) -> ssl.SSLContext | None:
    if not settings.kafka_security_protocol.upper().endswith("SSL"):
        return None
    return ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)


# The option names of each library, by what they carry.
_KAFKA_PYTHON = {"protocol": "security_protocol", "mechanism": "sasl_mechanism", "username": "sasl_plain_username",
                 "password": "sasl_plain_password", "cafile": "ssl_cafile"}
_LIBRDKAFKA = {"protocol": "security.protocol", "mechanism": "sasl.mechanism", "username": "sasl.username",
               "password": "sasl.password", "cafile": "ssl.ca.location"}


def _options(settings: Any, names: dict[str, str]) -> dict[str, Any]:
    """The security options under one library's names (nothing for PLAINTEXT)."""
    check(settings)
    protocol = settings.kafka_security_protocol.upper()
    if protocol == "PLAINTEXT":
        return {}
    values = {"protocol": protocol}
    if protocol.startswith("SASL"):
        values |= {"mechanism": settings.kafka_sasl_mechanism.upper(), "username": settings.kafka_sasl_username,
                   "password": settings.kafka_sasl_password}
    if protocol.endswith("SSL") and settings.kafka_ssl_cafile:
        values["cafile"] = settings.kafka_ssl_cafile
    return {names[k]: v for k, v in values.items()}


def kafka_python(settings: Any) -> dict[str, Any]:
    """Options for kafka-python's KafkaProducer / KafkaConsumer / KafkaAdminClient."""
    return _options(settings, _KAFKA_PYTHON)


def aiokafka(settings: Any) -> dict[str, Any]:
    """Options for aiokafka's AIOKafkaProducer / AIOKafkaConsumer (an SSL context instead of a CA path)."""
    out = kafka_python(settings)
    out.pop("ssl_cafile", None)
    context = _ssl_context(settings)
    if context is not None:
        out["ssl_context"] = context
    return out


def librdkafka(settings: Any) -> dict[str, Any]:
    """Options for confluent-kafka's Consumer / Producer (librdkafka's names)."""
    return _options(settings, _LIBRDKAFKA)


def faust_credentials(settings: Any) -> Any:
    """Faust's `broker_credentials` (None for PLAINTEXT)."""
    check(settings)
    protocol = settings.kafka_security_protocol.upper()
    if protocol == "PLAINTEXT":
        return None
    import faust

    context = _ssl_context(settings)
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(username=settings.kafka_sasl_username, password=settings.kafka_sasl_password,
                                     ssl_context=context, mechanism=settings.kafka_sasl_mechanism.upper())
    return faust.SSLCredentials(context)
