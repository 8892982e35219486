"""The local Kafka broker's launcher, shipped as package data so that an installed ``connector demo``
runs it without a checkout: ``kafka`` (bash: fetch, check, start, stop), ``kafka-pom.xml`` (the broker
jars Maven fetches once into ``~/.cache/orders-connector``) and ``kafka-log4j2.properties``.
:class:`connector.localkafka.LocalKafka` drives it; ``scripts/kafka`` runs it from a checkout."""
