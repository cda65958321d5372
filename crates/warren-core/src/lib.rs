//! Small vocabulary shared by every warren crate.
//!
//! Engines are sans-IO: they never read a clock or an OS random source. Time enters as an
//! [`Instant`] argument (a monotonic count of nanoseconds from an arbitrary origin chosen by
//! the driver, which uses `CLOCK_BOOTTIME` so suspended time counts), and randomness through
//! the [`Rng`] trait, which the driver backs with the OS generator and tests back with a seeded
//! [`TestRng`].
#![forbid(unsafe_code)]

mod ids;
mod rng;
mod time;

pub use ids::{KeyId, PacketId, PeerId, SessionId};
pub use rng::{Rng, TestRng};
pub use time::Instant;

pub use std::time::Duration;
