//! End-to-end and integration tests of the `switchyard` binary, one module
//! per area. Tests that need a broker use a real Apache Kafka broker: the one
//! at `$KAFKA_BOOTSTRAP`, or one this test binary starts (and stops) itself
//! (`scripts/kafka.sh`, KRaft mode, jars from Maven Central).
//! Cloud worker tests (`cloud`) talk to real servers started from
//! `.venv-peers` (`peers`), through a fault-injecting proxy (`proxy`).
//! Hybrid pipeline tests (`hybrid`) run the binary against another
//! switchyard's `serve` endpoint. Schema Registry formats (`schema_registry`)
//! use a real registry server (`scripts/registry.sh`).

mod backfill;
mod broker;
mod cloud;
mod cluster;
mod compression;
mod crash;
mod deploy;
mod drift_loop;
mod drift_stats;
mod e2e;
mod exactly_once;
mod hybrid;
mod kafka_source;
mod lanes;
mod model;
mod operations;
mod peers;
mod proxy;
mod reload;
mod scale;
mod schema_registry;
mod security;
mod storage;
mod support;
