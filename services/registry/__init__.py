"""A Confluent Schema Registry REST API subset for Avro, stored in the compacted `_schemas` topic."""
