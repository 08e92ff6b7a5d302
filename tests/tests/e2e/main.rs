//! End-to-end tests of Agora: one test binary (each links all of DataFusion).
//!
//! Run by `./scripts/test`, which also provides the S3-protocol server the `s3`
//! module needs (`AGORA_TEST_S3_ENDPOINT`).

mod faults;
mod flight;
mod freshness;
mod governance;
mod local;
mod postgres;
mod products;
mod s3;
mod support;
