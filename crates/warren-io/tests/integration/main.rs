//! warren-io's integration tests, in one test binary (one link in the release build).

mod common;

mod netns;
mod offload;
mod reuseport;
