//! warren-net's integration tests, in one test binary (one link in the release build).

mod journal;
mod netns;
