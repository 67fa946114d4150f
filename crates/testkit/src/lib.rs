//! Builders, generators and fixtures shared by Keel's tests and benchmarks: a builder that writes
//! legal executions event by event, and proptest strategies for arbitrary events and for arbitrary
//! *legal* event sequences; real servers tests start ([`s3::MotoServer`]); throwaway certificates
//! ([`certs`]) and a TLS front for the test PostgreSQL (`terminator`, feature `tls`). Not for
//! production paths.

pub mod builder;
pub mod certs;
#[cfg(feature = "proptest")]
pub mod generators;
pub mod s3;
#[cfg(feature = "tls")]
pub mod terminator;

pub use builder::ExecBuilder;
