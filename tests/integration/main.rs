//! End-to-end and integration tests of the `switchyard` binary, one module
//! per area. Tests that need a broker use a real tansu process: the one at
//! `$KAFKA_BOOTSTRAP`, or one this test binary starts (and stops) itself.

mod broker;
mod crash;
mod e2e;
mod kafka_source;
mod model;
mod support;
